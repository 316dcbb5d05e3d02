// The Argo CD components the tests run, in one binary that ARGOCD_BINARY_NAME (else its
// file name) dispatches, as Argo CD's own cmd/main.go does. That one also links the CLI,
// the API server, Dex, notifications and the ApplicationSet controller, which the tests
// never start: a quarter more packages to compile on a fresh machine.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/cli"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func main() {
	// What Argo CD's main does before any command: klog at the configured level and
	// format. Its workaround for gRPC's SRV lookups (util/grpc.DisableSRVLookups) is not
	// needed, and would panic: only grpclb's import turns them on, and these components
	// do not link it.
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))

	name := os.Getenv("ARGOCD_BINARY_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	var command *cobra.Command
	switch name {
	case common.CommandApplicationController:
		command = appcontroller.NewCommand()
	case common.CommandRepoServer:
		command = reposerver.NewCommand()
	case common.CommandGitAskPass: // what the repo-server runs when Git asks for credentials
		command = gitaskpass.NewCommand()
	default:
		fmt.Fprintf(os.Stderr, "%s: not a component of this build; set ARGOCD_BINARY_NAME to %s, %s or %s\n",
			name, common.CommandApplicationController, common.CommandRepoServer, common.CommandGitAskPass)
		os.Exit(2)
	}
	command.AddCommand(cli.NewVersionCmd(name))
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
