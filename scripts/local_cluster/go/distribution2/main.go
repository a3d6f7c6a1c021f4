// The `registry` binary of distribution v2.8 as the registry:2 image runs it, with
// the filesystem and in-memory storage drivers and every auth backend; the cloud
// storage drivers are left out (their SDKs' old APIs are gone from the proxy).
package main

import (
	_ "net/http/pprof"

	"github.com/docker/distribution/registry"
	_ "github.com/docker/distribution/registry/auth/htpasswd"
	_ "github.com/docker/distribution/registry/auth/silly"
	_ "github.com/docker/distribution/registry/auth/token"
	_ "github.com/docker/distribution/registry/proxy"
	_ "github.com/docker/distribution/registry/storage/driver/filesystem"
	_ "github.com/docker/distribution/registry/storage/driver/inmemory"
)

func main() {
	registry.RootCmd.Execute()
}
