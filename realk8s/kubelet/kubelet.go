// Package kubelet is a fake kubelet for a cluster without nodes: it binds every unscheduled pod
// to one node, reports it Running and Ready after a start delay, follows a container image
// change with a restart in containerStatuses, and finishes graceful deletions (the real kubelet
// deletes a terminating pod with grace 0 once its containers stopped). It plays the part
// kapi-sim's built-in kubelet simulation plays there, so the same tests pass on both servers.
package kubelet

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Config of the fake kubelet.
type Config struct {
	Node       string        // node name pods are bound to
	SkipPrefix string        // namespaces with this prefix are left alone ("" = none)
	StartDelay time.Duration // bound -> Running and Ready
	StopDelay  time.Duration // deletionTimestamp -> deleted with grace 0
	Log        io.Writer
}

// Kubelet runs until its context ends.
type Kubelet struct {
	cfg Config
	cs  kubernetes.Interface
	mu  sync.Mutex
	due map[types.UID]string // pod uid -> the action scheduled for it
}

// New makes a fake kubelet on clientset cs.
func New(cs kubernetes.Interface, cfg Config) *Kubelet {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return &Kubelet{cfg: cfg, cs: cs, due: map[types.UID]string{}}
}

// Run watches every pod (all namespaces) and acts on them; it returns when ctx ends.
func (k *Kubelet) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactory(k.cs, 0)
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.handle(ctx, o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { k.handle(ctx, o.(*corev1.Pod)) },
	})
	if err != nil {
		return fmt.Errorf("kubelet: add handler: %w", err)
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}

func (k *Kubelet) schedule(ctx context.Context, p *corev1.Pod, action string, after time.Duration, fn func(context.Context) error) {
	k.mu.Lock()
	if k.due[p.UID] == action {
		k.mu.Unlock()
		return
	}
	k.due[p.UID] = action
	k.mu.Unlock()
	time.AfterFunc(after, func() {
		if ctx.Err() != nil {
			return
		}
		err := fn(ctx)
		k.mu.Lock()
		if k.due[p.UID] == action {
			delete(k.due, p.UID)
		}
		k.mu.Unlock()
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
			fmt.Fprintf(k.cfg.Log, "level=warn component=kubelet pod=%s/%s action=%s err=%q\n", p.Namespace, p.Name, action, err)
		}
	})
}

func (k *Kubelet) handle(ctx context.Context, p *corev1.Pod) {
	ns, name, uid := p.Namespace, p.Name, p.UID
	if k.cfg.SkipPrefix != "" && strings.HasPrefix(ns, k.cfg.SkipPrefix) {
		return
	}
	pods := k.cs.CoreV1().Pods(ns)
	switch {
	case p.DeletionTimestamp != nil:
		if p.Spec.NodeName != k.cfg.Node {
			return
		}
		k.schedule(ctx, p, "delete", k.cfg.StopDelay, func(ctx context.Context) error {
			zero := int64(0)
			return pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
				Preconditions: &metav1.Preconditions{UID: &uid}})
		})
	case p.Spec.NodeName == "":
		k.schedule(ctx, p, "bind", 0, func(ctx context.Context) error {
			return pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid},
				Target: corev1.ObjectReference{Kind: "Node", Name: k.cfg.Node}}, metav1.CreateOptions{})
		})
	case p.Spec.NodeName == k.cfg.Node && (p.Status.Phase == corev1.PodPending || p.Status.Phase == ""):
		k.schedule(ctx, p, "start", k.cfg.StartDelay, func(ctx context.Context) error {
			return k.writeStatus(ctx, ns, name, uid, false)
		})
	case p.Spec.NodeName == k.cfg.Node && imagesChanged(p):
		k.schedule(ctx, p, "restart", 0, func(ctx context.Context) error {
			return k.writeStatus(ctx, ns, name, uid, true)
		})
	}
}

func imagesChanged(p *corev1.Pod) bool {
	if len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return true
	}
	for i, c := range p.Spec.Containers {
		if p.Status.ContainerStatuses[i].Image != c.Image {
			return true
		}
	}
	return false
}

// writeStatus reports the pod Running and Ready with one running status per container;
// restart: a container whose image changed counts a restart, as the kubelet reports it.
// A conflict (someone wrote the pod meanwhile) is retried on a fresh read: a lost status
// write would leave the pod waiting for its kubelet for ever.
func (k *Kubelet) writeStatus(ctx context.Context, ns, name string, uid types.UID, restart bool) error {
	var err error
	for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
		if err = k.writeStatusOnce(ctx, ns, name, uid, restart); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}

func (k *Kubelet) writeStatusOnce(ctx context.Context, ns, name string, uid types.UID, restart bool) error {
	pods := k.cs.CoreV1().Pods(ns)
	p, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.UID != uid || p.DeletionTimestamp != nil {
		return nil
	}
	if p.Status.Phase == corev1.PodRunning && podReady(p) && !imagesChanged(p) {
		// Already what this write would report (a start or restart that another status write
		// overtook): the kubelet writes nothing, so an idle pod keeps its version. A write
		// here would only move timestamps and start a second version of one idle period.
		return nil
	}
	now := metav1.Now()
	st := &p.Status
	st.Phase = corev1.PodRunning
	if st.StartTime == nil {
		st.StartTime = &now
	}
	st.HostIP, st.PodIP = "127.0.0.1", "10.244.0.1"
	st.HostIPs, st.PodIPs = []corev1.HostIP{{IP: "127.0.0.1"}}, []corev1.PodIP{{IP: "10.244.0.1"}}
	old := map[string]corev1.ContainerStatus{}
	for _, cs := range st.ContainerStatuses {
		old[cs.Name] = cs
	}
	st.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true,
			Started: ptr(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}
		if o, ok := old[c.Name]; ok {
			cs.RestartCount = o.RestartCount
			if restart && o.Image != c.Image {
				cs.RestartCount++
			} else if o.State.Running != nil {
				cs.State = o.State
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
