// Command cert-manager runs cert-manager's controllers for the CA and
// SelfSigned issuers, built from the library packages of the root module.
//
// Upstream's own main lives in a nested module that the module proxy cannot
// serve, and the wiring it uses sits under internal/. This is the same wiring
// reduced to what the local cluster needs: a ContextFactory from
// pkg/controller, the controllers that registered themselves with
// controller.Known(), and the shared informers they use.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/sets"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/cert-manager/cert-manager/pkg/controller"
	shimingresses "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	// The issuer backends register themselves with pkg/issuer, which the
	// Issuer and ClusterIssuer readiness controllers look them up in.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// defaultControllers are the controllers that issue Certificates from CA and
// SelfSigned issuers. The approver is among them because the signers ignore
// CertificateRequests nobody approved; ingress-shim turns an Ingress's
// cert-manager.io/cluster-issuer annotation into a Certificate, as upstream does.
var defaultControllers = []string{
	shimingresses.ControllerName,
	issuers.ControllerName,
	clusterissuers.ControllerName,
	approver.ControllerName,
	crca.CRControllerName,
	crselfsigned.CRControllerName,
	trigger.ControllerName,
	issuing.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

type options struct {
	apiServerHost            string
	kubeconfig               string
	namespace                string
	clusterResourceNamespace string
	leaderElect              bool
	controllers              []string
	workers                  int
	qps                      float32
	burst                    int
	metricsAddress           string
	logging                  *logsapi.LoggingConfiguration
}

func parseFlags() *options {
	opts := &options{logging: logsapi.NewLoggingConfiguration()}
	fs := pflag.NewFlagSet(os.Args[0], pflag.ExitOnError)
	fs.StringVar(&opts.apiServerHost, "master", "", "API server address; overrides the kubeconfig's")
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster config")
	fs.StringVar(&opts.namespace, "namespace", "", "only watch this namespace; empty means all")
	fs.StringVar(&opts.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace holding the Secrets that ClusterIssuers refer to")
	fs.BoolVar(&opts.leaderElect, "leader-elect", false,
		"leader election; not supported, this build runs as a single instance")
	fs.StringSliceVar(&opts.controllers, "controllers", defaultControllers,
		"controllers to run, from: "+strings.Join(known(), ", "))
	fs.IntVar(&opts.workers, "concurrent-workers", 5, "workers per controller")
	fs.Float32Var(&opts.qps, "kube-api-qps", 20, "client-side QPS limit when the server lacks APF")
	fs.IntVar(&opts.burst, "kube-api-burst", 50, "client-side burst when the server lacks APF")
	fs.StringVar(&opts.metricsAddress, "metrics-listen-address", "",
		"address to serve Prometheus metrics on; empty disables them")
	utilfeature.DefaultMutableFeatureGate.AddFlag(fs)
	logf.AddFlagsNonDeprecated(opts.logging, fs)
	_ = fs.Parse(os.Args[1:])
	return opts
}

func known() []string {
	names := make([]string, 0, len(controller.Known()))
	for name := range controller.Known() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func main() {
	logf.InitLogs()
	defer logf.FlushLogs()
	opts := parseFlags()
	if err := logf.ValidateAndApply(opts.logging); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	// A signal during start-up can fail the cache sync; that is still a clean stop.
	if err := run(ctx, opts); err != nil && ctx.Err() == nil {
		logf.Log.Error(err, "cert-manager controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func validate(opts *options) error {
	if opts.leaderElect {
		return errors.New("--leader-elect=true is not supported: run a single instance")
	}
	for _, name := range opts.controllers {
		if _, ok := controller.Known()[name]; !ok {
			return fmt.Errorf("unknown controller %q, known: %s", name, strings.Join(known(), ", "))
		}
	}
	return nil
}

func run(rootCtx context.Context, opts *options) error {
	if err := validate(opts); err != nil {
		return err
	}
	rootCtx, cancel := context.WithCancel(rootCtx)
	defer cancel()
	group, rootCtx := errgroup.WithContext(rootCtx)

	factory, err := controller.NewContextFactory(rootCtx, contextOptions(opts))
	if err != nil {
		return err
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}
	if err := serveMetrics(rootCtx, group, base, opts.metricsAddress); err != nil {
		return err
	}
	if err := startControllers(rootCtx, group, factory, opts); err != nil {
		cancel()
		return errors.Join(err, group.Wait())
	}
	// Informers are started last, once every controller has asked for its own.
	base.SharedInformerFactory.Start(rootCtx.Done())
	base.KubeSharedInformerFactory.Start(rootCtx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())

	err = group.Wait()
	base.HTTP01ResourceMetadataInformersFactory.Shutdown()
	base.KubeSharedInformerFactory.Shutdown()
	base.SharedInformerFactory.Shutdown()
	return err
}

// contextOptions mirrors upstream's defaults for everything not exposed as a flag.
func contextOptions(opts *options) controller.ContextOptions {
	return controller.ContextOptions{
		APIServerHost:      opts.apiServerHost,
		Kubeconfig:         opts.kubeconfig,
		KubernetesAPIQPS:   opts.qps,
		KubernetesAPIBurst: opts.burst,
		Namespace:          opts.namespace,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        opts.clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: true,
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes: []string{
				"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/",
			},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
		IngressShimOptions: controller.IngressShimOptions{
			DefaultIssuerKind:                 "Issuer",
			DefaultIssuerGroup:                "cert-manager.io",
			DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"},
		},
		SchedulerOptions: controller.SchedulerOptions{MaxConcurrentChallenges: 60},
	}
}

func startControllers(
	ctx context.Context, group *errgroup.Group, factory *controller.ContextFactory, opts *options,
) error {
	log := logf.FromContext(ctx)
	for _, name := range sets.List(sets.New(opts.controllers...)) {
		// A namespaced controller must not act on cluster-scoped issuers.
		if opts.namespace != "" && name == clusterissuers.ControllerName {
			continue
		}
		iface, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("building controller %s: %w", name, err)
		}
		log.Info("starting controller", "controller", name)
		group.Go(func() error { return iface.Run(opts.workers, ctx) })
	}
	return nil
}

func serveMetrics(
	ctx context.Context, group *errgroup.Group, base *controller.Context, address string,
) error {
	if address == "" {
		return nil
	}
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("listening for metrics on %s: %w", address, err)
	}
	server := base.Metrics.NewServer(listener)
	group.Go(func() error {
		if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	group.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return server.Shutdown(shutdownCtx) //nolint:contextcheck // the root context is gone
	})
	return nil
}
