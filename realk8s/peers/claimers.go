package peers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
)

var claimGVR = schema.GroupVersionResource{Group: "podclaim.io", Version: "v1alpha1", Resource: "sandboxclaims"}

// ClaimerMain is `realk8s peer-claimer`: one Go baseline serving claims on stdin/stdout.
//
//	--system clientgo    the client-go way: shared informer, an idle pod picked from its cache,
//	                     claimed with a resourceVersion-guarded Update, then the claim object's
//	                     status written; a 409 picks another pod
//	--system unguarded   the unguarded relabel: the same pick, then a PATCH without precondition
//	--qps Q --burst B    client-go's client-side rate limit (one token bucket for the process,
//	                     as controller-runtime's one client has); the defaults are client-go's
//	                     own (5, 10); --qps -1 turns it off
func ClaimerMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("peer-claimer", flag.ContinueOnError)
	system := fs.String("system", "clientgo", "clientgo | unguarded")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "")
	ns := fs.String("namespace", "", "the pool's namespace")
	pool := fs.String("pool", "", "the pool (label podclaim.io/pool)")
	qps := fs.Float64("qps", 5, "client-side QPS (client-go default 5; -1 = no limit)")
	burst := fs.Int("burst", 10, "client-side burst (client-go default 10)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ns == "" || *pool == "" {
		return errors.New("--namespace and --pool are required")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %q: %w", *kubeconfig, err)
	}
	rc.UserAgent = "peers-" + *system
	rc.QPS, rc.Burst = float32(*qps), *burst
	if *qps > 0 {
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(float32(*qps), *burst)
	}
	c, err := newCacheClaimer(ctx, rc, *ns, *pool)
	if err != nil {
		return err
	}
	defer c.stop()
	var fn claimFunc
	switch *system {
	case "clientgo":
		fn = c.claimGuarded
	case "unguarded":
		fn = c.claimUnguarded
	default:
		return fmt.Errorf("--system %q: want clientgo or unguarded", *system)
	}
	return serve(ctx, os.Stdin, os.Stdout, fn)
}

// cacheClaimer holds what both baselines share: a clientset, a shared informer on the pool's
// pods, its lister.
type cacheClaimer struct {
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	ns     string
	pool   string
	sel    labels.Selector
	lister corelisters.PodLister
	stop   context.CancelFunc
}

func newCacheClaimer(ctx context.Context, rc *rest.Config, ns, pool string) (*cacheClaimer, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("clientset: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	sel := labels.SelectorFromSet(labels.Set{LabelPool: pool})
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }))
	pods := f.Core().V1().Pods()
	lister := pods.Lister()
	inf := pods.Informer()
	ictx, cancel := context.WithCancel(ctx)
	f.Start(ictx.Done())
	if !cache.WaitForCacheSync(ictx.Done(), inf.HasSynced) {
		cancel()
		return nil, errors.New("pod informer did not sync")
	}
	return &cacheClaimer{cs: cs, dyn: dyn, ns: ns, pool: pool, sel: sel, lister: lister,
		stop: func() { cancel(); f.Shutdown() }}, nil
}

func idleReady(p *corev1.Pod) bool {
	if p.Labels[LabelPhase] != "Idle" || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pick returns a random idle pod of the cache, or waits: an empty cache backs off as a
// requeued work item does (5 ms, doubling, at most 500 ms), since nothing in the client-go
// way wakes a claim when a pod turns idle.
func (c *cacheClaimer) pick(ctx context.Context, backoff *time.Duration) (*corev1.Pod, error) {
	for {
		all, err := c.lister.Pods(c.ns).List(c.sel)
		if err != nil {
			return nil, err
		}
		idle := all[:0]
		for _, p := range all {
			if idleReady(p) {
				idle = append(idle, p)
			}
		}
		if len(idle) > 0 {
			// random, not the first: every claimer taking the first idle pod would all
			// race for one pod
			return idle[rand.IntN(len(idle))].DeepCopy(), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(*backoff):
		}
		*backoff = min(2**backoff, 500*time.Millisecond)
	}
}

// claimGuarded is the client-go way. The request is a SandboxClaim object (the user's create),
// then two writes: the pod's Update, guarded by the resourceVersion the cache had (a PUT
// carries metadata.resourceVersion and the server refuses it with 409 if the pod moved on),
// and the claim's status.
func (c *cacheClaimer) claimGuarded(ctx context.Context, id string, ack func()) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	claims := c.dyn.Resource(claimGVR).Namespace(c.ns)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "podclaim.io/v1alpha1", "kind": "SandboxClaim",
		"metadata": map[string]any{"name": id, "namespace": c.ns},
		"spec":     map[string]any{"pool": c.pool},
	}}
	t0 := time.Now()
	claim, err := claims.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create claim: %w", err)
	}
	ack()
	t1, tries := time.Now(), 0
	backoff := 5 * time.Millisecond
	var won *corev1.Pod
	for won == nil {
		tries++
		p, err := c.pick(ctx, &backoff)
		if err != nil {
			return "", err
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Labels[LabelPhase], p.Labels[LabelOwner] = "Running", OwnerValue
		p.Annotations[AnnClaimID] = id
		won, err = c.cs.CoreV1().Pods(c.ns).Update(ctx, p, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			won = nil // someone else won it: pick another
			continue
		}
		if err != nil {
			return "", fmt.Errorf("update pod %s: %w", p.Name, err)
		}
	}
	t2 := time.Now()
	for {
		claim.Object["status"] = map[string]any{"phase": "Bound", "pod": won.Name}
		_, err := claims.UpdateStatus(ctx, claim, metav1.UpdateOptions{})
		if err == nil {
			if t3 := time.Now(); t3.Sub(t0) > 100*time.Millisecond {
				// where a slow claim spent its time (the harness prints this at the end of a cell)
				fmt.Fprintf(os.Stderr, "slow claim %s: create %v, pod %v (%d tries, last backoff %v), status %v\n",
					id, t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), tries, backoff,
					t3.Sub(t2).Round(time.Millisecond))
			}
			return won.Name, nil
		}
		if !apierrors.IsConflict(err) {
			return "", fmt.Errorf("claim %s status: %w", id, err)
		}
		if claim, err = claims.Get(ctx, id, metav1.GetOptions{}); err != nil {
			return "", fmt.Errorf("claim %s: %w", id, err)
		}
	}
}

// claimUnguarded is the relabel without precondition: the same pick, then one merge PATCH of
// the labels. The server applies it whatever happened to the pod since the cache saw it, so
// two callers that picked the same pod both "win" it.
func (c *cacheClaimer) claimUnguarded(ctx context.Context, id string, ack func()) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ack()
	backoff := 5 * time.Millisecond
	p, err := c.pick(ctx, &backoff)
	if err != nil {
		return "", err
	}
	body := fmt.Sprintf(`{"metadata":{"labels":{%q:"Running",%q:%q},"annotations":{%q:%q}}}`,
		LabelPhase, LabelOwner, OwnerValue, AnnClaimID, id)
	if _, err := c.cs.CoreV1().Pods(c.ns).Patch(ctx, p.Name, types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
		return "", fmt.Errorf("patch pod %s: %w", p.Name, err)
	}
	return p.Name, nil
}
