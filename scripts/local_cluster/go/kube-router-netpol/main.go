// Command kube-router-netpol runs only kube-router's network policy controller,
// started the way k3s's agent starts it in-process (pkg/agent/netpol in k3s):
// the firewall on, no router, no service proxy. The local cluster runs it beside
// kube-proxy so NetworkPolicy is enforced as on a k3s node.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/utils"
	"github.com/cloudnativelabs/kube-router/v2/pkg/version"
	"github.com/coreos/go-iptables/iptables"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of an identity that may list pods, namespaces and network policies")
	node := flag.String("hostname-override", "", "this node's name, as the kubelet registered it")
	serviceCIDR := flag.String("service-cluster-ip-range", "", "the cluster's Service CIDR")
	nodePorts := flag.String("service-node-port-range", "30000-32767", "the NodePort range")
	showVersion := flag.Bool("version", false, "print the version and exit")
	klog.InitFlags(nil)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	if err := run(*kubeconfig, *node, *serviceCIDR, *nodePorts); err != nil {
		klog.Errorf("network policy controller: %v", err)
		os.Exit(1)
	}
}

func run(kubeconfig, nodeName, serviceCIDR, nodePorts string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Without ipset the controller cannot express a policy; fail loudly, where k3s only warns.
	ipset, err := utils.NewIPSet(false)
	if err != nil {
		return fmt.Errorf("ipset unavailable: %w", err)
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	// The controller reads the node's addresses once, at start: wait until the node has them.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			klog.Infof("waiting for node %s: %v", nodeName, err)
			return false, nil
		}
		return len(node.Status.Addresses) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("node %s has no addresses: %w", nodeName, err)
	}

	config := options.NewKubeRouterConfig()
	config.ClusterIPCIDRs = []string{serviceCIDR}
	config.EnableIPv4 = true
	config.EnableIPv6 = false
	config.NodePortRange = strings.ReplaceAll(nodePorts, "-", ":")
	config.HostnameOverride = nodeName
	config.RunFirewall = true
	config.RunRouter = false
	config.RunServiceProxy = false

	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	controller, err := netpol.NewNetworkPolicyController(client, config, pods, policies, namespaces,
		&sync.Mutex{}, nil,
		map[v1.IPFamily]utils.IPTablesHandler{v1.IPv4Protocol: ipt},
		map[v1.IPFamily]utils.IPSetHandler{v1.IPv4Protocol: ipset})
	if err != nil {
		return fmt.Errorf("unable to initialise: %w", err)
	}
	pods.AddEventHandler(controller.PodEventHandler)
	namespaces.AddEventHandler(controller.NamespaceEventHandler)
	policies.AddEventHandler(controller.NetworkPolicyEventHandler)

	// The supervisor watches the process, not kube-router's health endpoint, so
	// heartbeats are only drained.
	heartbeats := make(chan *healthcheck.ControllerHeartbeat)
	go func() {
		for {
			select {
			case <-heartbeats:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	klog.Infof("starting kube-router %s network policy controller on node %s", version.Version, nodeName)
	go controller.Run(heartbeats, ctx.Done(), &wg)
	wg.Wait()
	return nil
}
