// Package peers measures podclaim beside the ways its users claim warm pods today, on the real
// kube-apiserver + etcd (issue 15, docs/peers.md).
//
// Every system runs as a claimer process of its own, so its CPU can be read from /proc and
// nothing of the harness runs inside it. The harness (the driver) and a claimer talk over the
// claimer's stdin and stdout, one line per message:
//
//	driver -> claimer   C <id>                  claim a pod; <id> goes to podclaim.io/claim-id
//	claimer -> driver   READY                   once its cache holds the pool (first line)
//	claimer -> driver   A <id>                  the claim was accepted (create-ack)
//	claimer -> driver   R <id> ok <pod>         the pod is the caller's and usable
//	claimer -> driver   R <id> fail <reason>    the claim failed
//
// The Go baselines (this package, `realk8s peer-claimer`) and podclaim in process
// (bench/peers/pc_peer_claimer.c) speak it; podclaimd is driven over its own HTTP API and
// agent-sandbox through its SandboxClaim objects.
package peers

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
)

// The claim every system makes: the same labels and annotation on the pod, no image change
// (so the kubelet writes nothing), so the server does the same work for each.
const (
	LabelPool  = "podclaim.io/pool"
	LabelPhase = "podclaim.io/phase"
	AnnClaimID = "podclaim.io/claim-id"
	LabelOwner = "owner"
	OwnerValue = "peers"
)

// claimFunc claims one pod for id; ack is called once the request is accepted. It returns
// the pod's name.
type claimFunc func(ctx context.Context, id string, ack func()) (string, error)

// serve reads claim requests from in and answers on out until in ends, one goroutine per
// claim (a claimer serves many callers at once, as a controller or a service does).
func serve(ctx context.Context, in io.Reader, out io.Writer, claim claimFunc) error {
	var mu sync.Mutex // one writer at a time: lines must not interleave
	write := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, format, a...)
		mu.Unlock()
	}
	write("READY\n")
	var wg sync.WaitGroup
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), "C ")
		if !ok || id == "" {
			write("R %s fail bad-request\n", strings.ReplaceAll(sc.Text(), " ", "_"))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod, err := claim(ctx, id, func() { write("A %s\n", id) })
			if err != nil {
				write("R %s fail %s\n", id, strings.Join(strings.Fields(err.Error()), "_"))
				return
			}
			write("R %s ok %s\n", id, pod)
		}()
	}
	wg.Wait()
	return sc.Err()
}
