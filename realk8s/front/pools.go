package front

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

const (
	labelPool  = "podclaim.io/pool"
	labelPhase = "podclaim.io/phase"
	annClaimID = "podclaim.io/claim-id"
)

var poolGVR = schema.GroupVersionResource{Group: "podclaim.io", Version: "v1alpha1", Resource: "sandboxpools"}

// ---- recorder: the claim audit from the server's own watch -----------------------------------

type claimRec struct {
	Index               int     `json:"index"`
	Namespace           string  `json:"namespace"`
	Pod                 string  `json:"pod"`
	IdleResourceVersion string  `json:"idleResourceVersion"`
	ResourceVersion     string  `json:"resourceVersion"`
	ClaimID             *string `json:"claimId"`
	Phase               string  `json:"phase"`
	UnixMs              int64   `json:"unixMs"`
}

// recorder follows every pod on the server with one watch, resumed from its last version, and
// logs each Idle -> other transition of a pool pod. A watch that cannot resume (410) means a
// transition may have been missed: it is counted in dropped, which the tests require to be 0.
type recorder struct {
	cs      kubernetes.Interface
	mu      sync.Mutex
	pods    map[string]*corev1.Pod // ns/name -> last seen state
	log     []claimRec
	dropped int
	rv      uint64
	notify  []func(old, cur *corev1.Pod) // recycler hooks, called on the watch goroutine
}

func newRecorder(cs kubernetes.Interface) *recorder {
	return &recorder{cs: cs, pods: map[string]*corev1.Pod{}}
}

func (r *recorder) start(ctx context.Context) error {
	l, err := r.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("recorder: list pods: %w", err)
	}
	r.mu.Lock()
	for i := range l.Items {
		p := &l.Items[i]
		r.pods[p.Namespace+"/"+p.Name] = p
	}
	r.rv, _ = strconv.ParseUint(l.ResourceVersion, 10, 64)
	r.mu.Unlock()
	go r.loop(ctx, l.ResourceVersion)
	return nil
}

func (r *recorder) loop(ctx context.Context, rv string) {
	for ctx.Err() == nil {
		w, err := r.cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				r.mu.Lock()
				r.dropped++
				r.mu.Unlock()
				rv = "" // relist semantics: start over from now
				break
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			rv = p.ResourceVersion
			r.observe(ev.Type, p)
		}
		w.Stop()
	}
}

func (r *recorder) observe(t watch.EventType, p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	r.mu.Lock()
	if n, err := strconv.ParseUint(p.ResourceVersion, 10, 64); err == nil && n > r.rv {
		r.rv = n
	}
	if t == watch.Bookmark {
		r.mu.Unlock()
		return
	}
	old := r.pods[key]
	if t == watch.Deleted {
		delete(r.pods, key)
	} else {
		r.pods[key] = p
	}
	if t == watch.Modified && old != nil && p.Labels[labelPool] != "" &&
		old.Labels[labelPhase] == "Idle" && p.Labels[labelPhase] != "Idle" {
		rec := claimRec{Index: len(r.log), Namespace: p.Namespace, Pod: p.Name,
			IdleResourceVersion: old.ResourceVersion, ResourceVersion: p.ResourceVersion,
			Phase: p.Labels[labelPhase], UnixMs: time.Now().UnixMilli()}
		if id, ok := p.Annotations[annClaimID]; ok {
			rec.ClaimID = &id
		}
		r.log = append(r.log, rec)
	}
	hooks := r.notify
	r.mu.Unlock()
	if t == watch.Deleted {
		p = nil
	}
	for _, h := range hooks {
		h(old, p)
	}
}

// catchUp waits until the watch has delivered every pod change the server had committed when
// it was called (the newest pod's resourceVersion), so /sim/claims is as exact as kapi-sim's
// log, which is written at commit. Bounded: 10 s.
func (r *recorder) catchUp(ctx context.Context) error {
	l, err := r.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var want uint64
	for i := range l.Items {
		if n, err := strconv.ParseUint(l.Items[i].ResourceVersion, 10, 64); err == nil && n > want {
			want = n
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.lastRV() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("the pod watch is at %d, the server at %d after 10 s", r.lastRV(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func (r *recorder) claims(since int) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []claimRec{}
	if since < len(r.log) {
		out = append(out, r.log[since:]...)
	}
	return map[string]any{"claims": out, "count": len(r.log), "dropped": r.dropped}
}

func (r *recorder) lastRV() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rv
}

func (r *recorder) podCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pods)
}

// ---- recycler: the test-only pool controller ---------------------------------------------------

type poolKey struct{ ns, name string }

// recycler keeps each --pool's replicas and walks its pods through the phases as kapi-sim's
// controller does. It is for tests only; podclaimd's pool controller (issue 13) replaces it.
type recycler struct {
	cs               kubernetes.Interface
	dyn              dynamic.Interface
	rec              *recorder
	warm, hold, stop time.Duration
	pools            []poolKey
	kick             chan struct{}
}

func (y *recycler) addPool(ctx context.Context, spec string) error {
	slash, eq := strings.Index(spec, "/"), strings.LastIndex(spec, "=")
	if slash <= 0 || eq < slash+2 {
		return fmt.Errorf("--pool %s: want NAMESPACE/NAME=REPLICAS", spec)
	}
	ns, name := spec[:slash], spec[slash+1:eq]
	n, err := strconv.Atoi(spec[eq+1:])
	if err != nil || n < 0 {
		return fmt.Errorf("--pool %s: bad replicas", spec)
	}
	_, err = y.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	// A fresh pool each time: what an earlier run left in this namespace goes first.
	zero := int64(0)
	pools := y.dyn.Resource(poolGVR).Namespace(ns)
	if err := pools.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete old pool %s/%s: %w", ns, name, err)
	}
	sel := labelPool + "=" + name
	if err := y.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: sel}); err != nil {
		return fmt.Errorf("delete old pods of %s/%s: %w", ns, name, err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "podclaim.io/v1alpha1", "kind": "SandboxPool",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"replicas": int64(n)},
	}}
	if _, err := pools.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pool %s/%s (are the CRDs installed?): %w", ns, name, err)
	}
	y.pools = append(y.pools, poolKey{ns, name})
	return nil
}

const templateImage = "registry.local/podclaim/sandbox:latest"

func phaseOf(p *corev1.Pod) string { return p.Labels[labelPhase] }

func templateImages(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == "sandbox" && c.Image != templateImage {
			return false
		}
	}
	return true
}

// running: the kubelet reports every container ready on the image the spec names.
func running(p *corev1.Pod) bool {
	if !ready(p) || len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return false
	}
	for i, c := range p.Spec.Containers {
		if cs := p.Status.ContainerStatuses[i]; cs.Image != c.Image || !cs.Ready {
			return false
		}
	}
	return true
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (y *recycler) mine(p *corev1.Pod) bool {
	for _, k := range y.pools {
		if p.Namespace == k.ns && p.Labels[labelPool] == k.name {
			return true
		}
	}
	return false
}

func (y *recycler) run(ctx context.Context) {
	y.kick = make(chan struct{}, 1)
	y.rec.mu.Lock()
	y.rec.notify = append(y.rec.notify, func(old, cur *corev1.Pod) { y.onPod(ctx, old, cur) })
	existing := make([]*corev1.Pod, 0, len(y.rec.pods))
	for _, p := range y.rec.pods {
		existing = append(existing, p)
	}
	y.rec.mu.Unlock()
	for _, p := range existing {
		y.onPod(ctx, nil, p)
	}
	tick := time.NewTicker(500 * time.Millisecond) // a safety net; pod events kick it too
	defer tick.Stop()
	for {
		for _, k := range y.pools {
			if err := y.reconcile(ctx, k); err != nil && ctx.Err() == nil {
				fmt.Printf("level=warn component=recycler pool=%s/%s err=%q\n", k.ns, k.name, err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-y.kick:
		case <-tick.C:
		}
	}
}

func (y *recycler) reconcile(ctx context.Context, k poolKey) error {
	pool, err := y.dyn.Resource(poolGVR).Namespace(k.ns).Get(ctx, k.name, metav1.GetOptions{})
	want := int64(0)
	if err == nil {
		want, _, _ = unstructured.NestedInt64(pool.Object, "spec", "replicas")
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	y.rec.mu.Lock()
	var have []*corev1.Pod
	for _, p := range y.rec.pods {
		if p.Namespace == k.ns && p.Labels[labelPool] == k.name && p.DeletionTimestamp == nil {
			have = append(have, p)
		}
	}
	y.rec.mu.Unlock()
	for i := int64(len(have)); i < want; i++ {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: k.name + "-", Namespace: k.ns,
			Labels: map[string]string{labelPool: k.name, labelPhase: "Starting"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sandbox", Image: templateImage}}}}
		if pool != nil {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "podclaim.io/v1alpha1", Kind: "SandboxPool",
				Name: k.name, UID: pool.GetUID(), Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}
		}
		if _, err := y.cs.CoreV1().Pods(k.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod: %w", err)
		}
	}
	zero := int64(0)
	for i := int64(len(have)); i > want; i-- {
		p := have[i-1]
		_ = y.cs.CoreV1().Pods(k.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// onPod runs on the recorder's watch goroutine: it only schedules work.
func (y *recycler) onPod(ctx context.Context, old, cur *corev1.Pod) {
	p := cur
	if p == nil {
		p = old
	}
	if p == nil || !y.mine(p) {
		return
	}
	if cur == nil || old == nil {
		select {
		case y.kick <- struct{}{}:
		default:
		}
	}
	if cur == nil || cur.DeletionTimestamp != nil {
		return
	}
	switch ph := phaseOf(cur); {
	case ph == "Starting" && running(cur):
		y.later(ctx, cur, y.warm, "Starting", func(p *corev1.Pod) { p.Labels[labelPhase] = "Idle" })
	case ph == "Stopping" && !templateImages(cur):
		// first the template's images back (the kubelet restarts the containers) ...
		y.later(ctx, cur, y.stop, "Stopping", func(p *corev1.Pod) {
			for i := range p.Spec.Containers {
				if p.Spec.Containers[i].Name == "sandbox" {
					p.Spec.Containers[i].Image = templateImage
				}
			}
		})
	case ph == "Stopping" && running(cur):
		// ... then Idle once they run it, so an idle period is one version of the pod
		y.later(ctx, cur, 0, "Stopping", func(p *corev1.Pod) {
			p.Labels = map[string]string{labelPool: p.Labels[labelPool], labelPhase: "Idle"}
			p.Annotations = nil
		})
	case old != nil && phaseOf(old) == "Idle" && ph != "Idle" && ph != "Starting":
		y.later(ctx, cur, y.hold, ph, func(p *corev1.Pod) { p.Labels[labelPhase] = "Stopping" })
	}
}

// later applies fn to the pod after d if it is still the same pod in phase from; a conflict
// (someone wrote the pod meanwhile) is retried on the newer version.
func (y *recycler) later(ctx context.Context, p *corev1.Pod, d time.Duration, from string, fn func(*corev1.Pod)) {
	ns, name, uid := p.Namespace, p.Name, p.UID
	seen := p.DeepCopy()
	time.AfterFunc(d, func() {
		for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
			// first try on the version the watch delivered (its resourceVersion is the
			// precondition); after a conflict, on a fresh read
			cur := seen
			if attempt > 0 {
				var err error
				if cur, err = y.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
					return
				}
			}
			if cur.UID != uid || phaseOf(cur) != from || cur.DeletionTimestamp != nil {
				return
			}
			before, _ := json.Marshal(cur)
			fn(cur)
			if after, _ := json.Marshal(cur); string(after) == string(before) {
				return
			}
			_, err := y.cs.CoreV1().Pods(ns).Update(ctx, cur, metav1.UpdateOptions{})
			if !apierrors.IsConflict(err) {
				return
			}
		}
	})
}
