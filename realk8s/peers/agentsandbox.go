package peers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// AgentSandbox is kubernetes-sigs/agent-sandbox's controller, built by hand outside the tree
// (docs/peers.md): the project keeps none of its code, binaries or build recipes. The harness
// only talks to it through its API objects, as its users and its own stress harness do.
type AgentSandbox struct {
	Bin  string // the controller binary
	CRDs string // its CRD manifests (a file or a folder for kubectl apply -f)
}

const extGroup = "extensions.agents.x-k8s.io"

var (
	asTemplateGVR = schema.GroupVersionResource{Group: extGroup, Version: "v1beta1", Resource: "sandboxtemplates"}
	asPoolGVR     = schema.GroupVersionResource{Group: extGroup, Version: "v1beta1", Resource: "sandboxwarmpools"}
	asClaimGVR    = schema.GroupVersionResource{Group: extGroup, Version: "v1beta1", Resource: "sandboxclaims"}
	asSandboxGVR  = schema.GroupVersionResource{Group: "agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxes"}
)

// asSession: one controller process and one SandboxTemplate + SandboxWarmPool of n replicas
// (its own pods: its controller creates them, the fake kubelet makes them Ready). A claim is a
// SandboxClaim create (the create-ack) until the claim's Ready condition is True, seen through
// a watch (claim -> usable), as the claims-warm phase of its stress harness measures it.
// "Recycling" is its users' release: the claim is deleted `hold` after it was Ready, and the
// warm pool replaces the sandbox it gave away.
type asSession struct {
	h        *harness
	cmd      *exec.Cmd
	exited   chan struct{}
	dyn      dynamic.Interface
	cancel   context.CancelFunc
	pool     string
	template string
	mu       sync.Mutex
	waiting  map[string]chan string // claim name -> its sandbox's name once Ready
	sandbox  map[string]string      // Ready claim -> sandbox, for the double-claim check
	doubleN  atomic.Int64
	released sync.WaitGroup
}

func (a *AgentSandbox) start(ctx context.Context, h *harness, pool string, n int) (session, error) {
	if err := needBin(a.Bin); err != nil {
		return nil, err
	}
	kc := h.cl.UserKubeconfig("peers-agent-sandbox")
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.UserAgent = -1, "peers-agent-sandbox-client" // its stress harness turns the limit off too
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.cfg.Dir, "agent-sandbox")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "controller-"+pool+".log"))
	if err != nil {
		return nil, err
	}
	// its defaults, less what needs a cluster this one is not: no webhook server (no
	// Service can reach us), no leader election (one replica), metrics and probes off
	cmd := exec.Command(a.Bin, "--kubeconfig", kc, "--extensions", "--enable-webhook=false",
		"--manage-webhook-certs=false", "--leader-elect=false", "--metrics-bind-address=0",
		"--health-probe-bind-address=0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agent-sandbox controller: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &asSession{h: h, cmd: cmd, exited: make(chan struct{}), dyn: dyn, cancel: cancel,
		pool: "as-" + pool, template: "as-" + pool + "-tmpl", waiting: map[string]chan string{}, sandbox: map[string]string{}}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.exited) }()
	fail := func(err error) (session, error) {
		s.close()
		return nil, fmt.Errorf("%w (controller log %s)", err, logf.Name())
	}
	ns := h.ns
	tmpl := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": extGroup + "/v1beta1", "kind": "SandboxTemplate",
		"metadata": map[string]any{"name": s.template, "namespace": ns},
		"spec": map[string]any{
			"service": false,
			"podTemplate": map[string]any{"spec": map[string]any{
				"restartPolicy": "Never", "terminationGracePeriodSeconds": int64(1), "automountServiceAccountToken": false,
				"containers": []any{map[string]any{"name": "main", "image": templateImage, "imagePullPolicy": "IfNotPresent",
					"command": []any{"sh", "-c", "trap 'exit 0' TERM INT; sleep infinity & wait"}}},
			}},
		},
	}}
	if _, err := dyn.Resource(asTemplateGVR).Namespace(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		return fail(fmt.Errorf("SandboxTemplate: %w", err))
	}
	wp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": extGroup + "/v1beta1", "kind": "SandboxWarmPool",
		"metadata": map[string]any{"name": s.pool, "namespace": ns},
		"spec":     map[string]any{"replicas": int64(n), "sandboxTemplateRef": map[string]any{"name": s.template}},
	}}
	if _, err := dyn.Resource(asPoolGVR).Namespace(ns).Create(ctx, wp, metav1.CreateOptions{}); err != nil {
		return fail(fmt.Errorf("SandboxWarmPool: %w", err))
	}
	// the claims' Ready conditions, through one watch
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
	inf := f.ForResource(asClaimGVR).Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.observe(o.(*unstructured.Unstructured)) },
		UpdateFunc: func(_, o any) { s.observe(o.(*unstructured.Unstructured)) },
	}); err != nil {
		return fail(err)
	}
	f.Start(sctx.Done())
	if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
		return fail(errors.New("claim informer did not sync"))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		p, err := dyn.Resource(asPoolGVR).Namespace(ns).Get(ctx, s.pool, metav1.GetOptions{})
		if err != nil {
			return fail(err)
		}
		ready, _, _ := unstructured.NestedInt64(p.Object, "status", "readyReplicas")
		if ready >= int64(n) {
			return s, nil
		}
		select {
		case <-s.exited:
			return fail(errors.New("the agent-sandbox controller exited"))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("warm pool %s: %d of %d ready after 3 min", s.pool, ready, n))
		}
	}
}

func (s *asSession) observe(u *unstructured.Unstructured) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	ready := false
	for _, c := range conds {
		m, _ := c.(map[string]any)
		ready = ready || m["type"] == "Ready" && m["status"] == "True"
	}
	if !ready {
		return
	}
	sb, _, _ := unstructured.NestedString(u.Object, "status", "sandbox", "name")
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.waiting[u.GetName()]
	if ch == nil {
		return
	}
	delete(s.waiting, u.GetName())
	for other, x := range s.sandbox {
		if x == sb && other != u.GetName() {
			s.doubleN.Add(1) // one sandbox handed to two claims
		}
	}
	s.sandbox[u.GetName()] = sb
	ch <- sb
}

func (s *asSession) claim(ctx context.Context, id string) result {
	ch := make(chan string, 1)
	s.mu.Lock()
	s.waiting[id] = ch
	s.mu.Unlock()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": extGroup + "/v1beta1", "kind": "SandboxClaim",
		"metadata": map[string]any{"name": id, "namespace": s.h.ns},
		"spec":     map[string]any{"warmPoolRef": map[string]any{"name": s.pool}},
	}}
	sent := time.Now()
	if _, err := s.dyn.Resource(asClaimGVR).Namespace(s.h.ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
		return result{sent: sent, done: time.Now(), why: "create: " + err.Error()}
	}
	ack := time.Now()
	select {
	case sb := <-ch:
		r := result{sent: sent, ack: ack, done: time.Now(), ok: true, pod: sb}
		if hold := time.Duration(s.h.pools.hold.Load()); hold >= 0 {
			s.released.Add(1)
			time.AfterFunc(hold, func() {
				defer s.released.Done()
				_ = s.h.harnessDyn.Resource(asClaimGVR).Namespace(s.h.ns).Delete(context.Background(), id, metav1.DeleteOptions{})
			})
		}
		return r
	case <-ctx.Done():
		return result{sent: sent, ack: ack, why: "unanswered"}
	}
}

func (s *asSession) cpuSeconds() float64 { return procCPU(s.cmd.Process.Pid) }

func (s *asSession) doubles() int { return int(s.doubleN.Load()) }

// close stops the controller, then removes its pool, template, claims and sandboxes (their
// pods go with them: the fake kubelet finishes the deletions), so the next cell starts clean.
func (s *asSession) close() {
	s.released.Wait()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, ns := s.h.harnessDyn, s.h.ns
	_ = d.Resource(asPoolGVR).Namespace(ns).Delete(ctx, s.pool, metav1.DeleteOptions{})
	_ = d.Resource(asTemplateGVR).Namespace(ns).Delete(ctx, s.template, metav1.DeleteOptions{})
	_ = d.Resource(asClaimGVR).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	// no controller runs now: strip the finalizers it may have left, or nothing goes away
	if l, err := d.Resource(asSandboxGVR).Namespace(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, it := range l.Items {
			if len(it.GetFinalizers()) > 0 {
				_, _ = d.Resource(asSandboxGVR).Namespace(ns).Patch(ctx, it.GetName(), types.MergePatchType,
					[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
			}
		}
	}
	_ = d.Resource(asSandboxGVR).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	zero := int64(0)
	_ = s.h.harnessCS.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: "!" + LabelPool})
	for ctx.Err() == nil {
		l, err := d.Resource(asSandboxGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) || err == nil && len(l.Items) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// patchConversionNone: agent-sandbox's CRDs convert between their versions through its
// webhook Service, which this cluster cannot reach (no Service network); the harness only
// uses the storage version, so conversion is switched off on the CRDs it installed.
func patchConversionNone(ctx context.Context, kubeconfig string) error {
	for _, crd := range []string{"sandboxes.agents.x-k8s.io", "sandboxclaims." + extGroup, "sandboxtemplates." + extGroup,
		"sandboxwarmpools." + extGroup} {
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "patch", "crd", crd, "--type=merge",
			"-p", `{"spec":{"conversion":{"strategy":"None","webhook":null}}}`).CombinedOutput()
		if err != nil {
			return fmt.Errorf("kubectl patch crd %s: %w: %s", crd, err, out)
		}
	}
	return nil
}
