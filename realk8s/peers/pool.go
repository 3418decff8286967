package peers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

const templateImage = "registry.local/podclaim/sandbox:latest"

// pools is the harness's warm-pool keeper, the same for every system: it creates the pods of
// each pool (already labelled Idle; the fake kubelet makes them Running and Ready), recycles a
// claimed pod back to Idle `hold` after its claim with one guarded PATCH, and audits every
// claim it sees for double claims. One informer on the namespace feeds both.
type pools struct {
	cs     kubernetes.Interface
	ns     string
	lister corelisters.PodLister
	stop   context.CancelFunc
	hold   atomic.Int64 // recycle a claimed pod this long after its claim (ns); < 0 = never

	mu        sync.Mutex // guards everything below
	scheduled map[string]bool
	epochs    map[string]*podEpoch // ns/name -> its current idle period
	doubles   map[string]int       // cell tag -> claims that overwrote another claim of the same idle period
	claimed   map[string]int       // cell tag -> distinct claim ids seen on pods
	recycles  atomic.Int64
}

// podEpoch: the claim ids written to a pod since it last turned Idle.
type podEpoch struct{ ids []string }

func newPools(ctx context.Context, cs kubernetes.Interface, ns string) (*pools, error) {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	p := &pools{cs: cs, ns: ns, scheduled: map[string]bool{}, epochs: map[string]*podEpoch{},
		doubles: map[string]int{}, claimed: map[string]int{}}
	p.hold.Store(-1)
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	p.lister = f.Core().V1().Pods().Lister()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.observe(ctx, nil, o.(*corev1.Pod)) },
		UpdateFunc: func(o, n any) { p.observe(ctx, o.(*corev1.Pod), n.(*corev1.Pod)) },
	}); err != nil {
		return nil, fmt.Errorf("pod handler: %w", err)
	}
	ictx, cancel := context.WithCancel(ctx)
	f.Start(ictx.Done())
	if !cache.WaitForCacheSync(ictx.Done(), inf.HasSynced) {
		cancel()
		return nil, fmt.Errorf("the harness's pod informer did not sync")
	}
	p.stop = func() { cancel(); f.Shutdown() }
	return p, nil
}

func cellOf(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}

// observe runs on the informer's goroutine for every event, in order: the audit, then the
// recycler's scheduling.
func (p *pools) observe(ctx context.Context, old, cur *corev1.Pod) {
	if cur.Labels[LabelPool] == "" {
		return
	}
	key := cur.Namespace + "/" + cur.Name
	phase := cur.Labels[LabelPhase]
	p.mu.Lock()
	e := p.epochs[key]
	if e == nil || phase == "Idle" && (old == nil || old.Labels[LabelPhase] != "Idle") {
		e = &podEpoch{}
		p.epochs[key] = e
	}
	if id := cur.Annotations[AnnClaimID]; phase != "Idle" && id != "" {
		seen := false
		for _, x := range e.ids {
			seen = seen || x == id
		}
		if !seen {
			e.ids = append(e.ids, id)
			p.claimed[cellOf(id)]++
			if len(e.ids) > 1 {
				// a second claim id in one idle period: its caller was told the pod is its
				// own while another caller holds it
				p.doubles[cellOf(id)]++
			}
		}
	}
	p.mu.Unlock()
	if phase != "Idle" && phase != "" {
		p.schedule(ctx, cur.Name, time.Duration(p.hold.Load()))
	}
}

// schedule recycles pod name after d unless it is already scheduled or recycling is off.
func (p *pools) schedule(ctx context.Context, name string, d time.Duration) {
	if d < 0 {
		return
	}
	p.mu.Lock()
	if p.scheduled[name] {
		p.mu.Unlock()
		return
	}
	p.scheduled[name] = true
	p.mu.Unlock()
	time.AfterFunc(d, func() { p.recycle(ctx, name) })
}

// recycle turns a claimed pod back to Idle with one merge PATCH carrying the resourceVersion
// the cache holds (a precondition, so a write we have not seen yet is never undone); on a
// conflict it tries again on the newer version a moment later.
func (p *pools) recycle(ctx context.Context, name string) {
	pod, err := p.lister.Pods(p.ns).Get(name)
	if err == nil && pod.Labels[LabelPhase] != "Idle" && pod.DeletionTimestamp == nil {
		body := fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{%q:"Idle",%q:null},`+
			`"annotations":{%q:null,"podclaim.io/claimed-at":null}}}`,
			pod.ResourceVersion, LabelPhase, LabelOwner, AnnClaimID)
		_, err = p.cs.CoreV1().Pods(p.ns).Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		if err == nil {
			p.recycles.Add(1)
		}
	} else {
		err = nil
	}
	p.mu.Lock()
	delete(p.scheduled, name)
	p.mu.Unlock()
	if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
		p.schedule(ctx, name, 20*time.Millisecond)
	}
}

// ensure makes pool `name` hold n pods (creating the missing ones; never deleting).
func (p *pools) ensure(ctx context.Context, name string, n int) error {
	have, err := p.lister.Pods(p.ns).List(labels.SelectorFromSet(labels.Set{LabelPool: name}))
	if err != nil {
		return err
	}
	sem := make(chan struct{}, 16)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for i := len(have); i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: p.ns,
				Labels: map[string]string{LabelPool: name, LabelPhase: "Idle"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sandbox", Image: templateImage}}}}
			if _, err := p.cs.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				errc <- fmt.Errorf("create pod in pool %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// reset recycles every claimed pod of the pool now and waits until all n are Idle and Ready,
// so each cell starts from the same full pool. Recycling is then `hold` (< 0 = off).
func (p *pools) reset(ctx context.Context, name string, n int, hold time.Duration) error {
	p.hold.Store(0)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		all, err := p.lister.Pods(p.ns).List(labels.SelectorFromSet(labels.Set{LabelPool: name}))
		if err != nil {
			return err
		}
		idle := 0
		for _, pod := range all {
			if idleReady(pod) {
				idle++
			} else if pod.Labels[LabelPhase] != "Idle" {
				p.schedule(ctx, pod.Name, 0)
			}
		}
		p.mu.Lock()
		busy := len(p.scheduled)
		p.mu.Unlock()
		if idle >= n && busy == 0 {
			p.hold.Store(int64(hold))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool %s: %d of %d pods idle after 3 min", name, idle, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// audit returns the double claims and the claim ids seen on pods for a cell so far.
func (p *pools) audit(cell string) (doubles, claimed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.doubles[cell], p.claimed[cell]
}
