// Command realk8s runs the real-server side of podclaim's tests.
//
//	realk8s up    --bin DIR --dir DIR    etcd + kube-apiserver + fake kubelet until SIGTERM;
//	                                     writes DIR/env (KUBECONFIG=..., REALK8S_URL=...) when ready
//	realk8s front --kubeconfig F [kapi-sim flags]
//	                                     a kapi-sim-shaped front for one test: pools, faults,
//	                                     /sim endpoints, proxied to the real server
//	realk8s peers --bin DIR --build DIR --crds F [flags]
//	                                     the peers benchmark (docs/peers.md): its own cluster,
//	                                     every system on the same pools, one table
//	realk8s peer-claimer --system S ...  one Go baseline of the peers benchmark, driven over
//	                                     stdin/stdout by `realk8s peers`
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"podclaim.io/realk8s/cluster"
	"podclaim.io/realk8s/front"
	"podclaim.io/realk8s/kubelet"
	"podclaim.io/realk8s/peers"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: realk8s up|front|peers|peer-claimer [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, os.Args[2:])
	case "front":
		err = front.Main(ctx, os.Args[2:])
	case "peers":
		err = peers.Main(ctx, os.Args[2:])
	case "peer-claimer":
		err = peers.ClaimerMain(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want up, front, peers or peer-claimer)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "realk8s %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	bin := fs.String("bin", "", "folder with kube-apiserver and etcd")
	dir := fs.String("dir", "", "state folder (created)")
	node := fs.String("node", "realk8s-node", "the fake kubelet's node name")
	start := fs.Duration("start-delay", 100*time.Millisecond, "bound pod -> Running and Ready")
	stopD := fs.Duration("stop-delay", 20*time.Millisecond, "deletionTimestamp -> deleted")
	skip := fs.String("kubelet-skip-prefix", "diff-", "namespaces the fake kubelet leaves alone (the differential suite's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" || *dir == "" {
		return errors.New("--bin and --dir are required")
	}
	c, err := cluster.Start(ctx, cluster.Config{BinDir: *bin, Dir: *dir, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "realk8s up: stop: %v\n", err)
		}
	}()
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	kdone := make(chan error, 1)
	go func() {
		kdone <- kubelet.New(cs, kubelet.Config{Node: *node, SkipPrefix: *skip, StartDelay: *start, StopDelay: *stopD, Log: os.Stderr}).Run(kctx)
	}()
	env := fmt.Sprintf("KUBECONFIG=%s\nREALK8S_URL=%s\nREALK8S_CA=%s\nREALK8S_TOKEN_FILE=%s\n",
		c.Kubeconfig, c.URL, c.CAFile, filepath.Join(*dir, "token"))
	if err := os.WriteFile(filepath.Join(*dir, "token"), []byte(c.Token), 0o600); err != nil {
		kcancel()
		return fmt.Errorf("write token: %w", err)
	}
	tmp := filepath.Join(*dir, "env.tmp")
	if err := os.WriteFile(tmp, []byte(env), 0o600); err != nil {
		kcancel()
		return fmt.Errorf("write env: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(*dir, "env")); err != nil {
		kcancel()
		return fmt.Errorf("write env: %w", err)
	}
	fmt.Fprintf(os.Stderr, "realk8s up: ready at %s (kubeconfig %s)\n", c.URL, c.Kubeconfig)
	<-ctx.Done()
	kcancel()
	<-kdone
	_ = os.Remove(filepath.Join(*dir, "env"))
	return nil
}
