package peers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// result of one claim as the driver saw it.
type result struct {
	sent, ack, done time.Time // ack zero: no separate accept step (the answer is the ack)
	ok              bool
	pod, why        string
}

// session is one claimer serving one cell.
type session interface {
	claim(ctx context.Context, id string) result
	cpuSeconds() float64 // the claimer process's user+system CPU so far
	close()
}

// system is one way of claiming: it starts a claimer for a pool.
type system struct {
	name  string // column header
	user  string // its API user: the audit log counts its writes by this name
	start func(ctx context.Context, h *harness, pool string, n int) (session, error)
}

// ---- claimers behind the stdin/stdout protocol ------------------------------------------------

type pipeSession struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	wmu     sync.Mutex // one writer of stdin
	mu      sync.Mutex // guards waiting
	waiting map[string]*pipeWait
	exited  chan struct{}
	stderr  *bytes.Buffer
}

type pipeWait struct {
	ack  time.Time
	done chan result
}

func startPipe(ctx context.Context, bin string, args ...string) (*pipeSession, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &pipeSession{cmd: cmd, waiting: map[string]*pipeWait{}, exited: make(chan struct{}), stderr: &bytes.Buffer{}}
	cmd.Stderr = &lockedWriter{w: s.stderr}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	br := bufio.NewReaderSize(out, 1<<16)
	ready := make(chan error, 1)
	go func() {
		line, err := br.ReadString('\n')
		if err != nil || line != "READY\n" {
			ready <- fmt.Errorf("%s did not start: %q %v", filepath.Base(bin), line, err)
			return
		}
		ready <- nil
		s.readLoop(br)
	}()
	go func() { _ = cmd.Wait(); close(s.exited) }()
	select {
	case err = <-ready:
	case <-time.After(90 * time.Second):
		err = fmt.Errorf("%s: no READY in 90 s", filepath.Base(bin))
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("%w; stderr: %s", err, s.stderrText())
	}
	return s, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (s *pipeSession) stderrText() string {
	s.cmd.Stderr.(*lockedWriter).mu.Lock()
	defer s.cmd.Stderr.(*lockedWriter).mu.Unlock()
	t := s.stderr.String()
	if len(t) > 2000 {
		t = t[len(t)-2000:]
	}
	return t
}

func (s *pipeSession) readLoop(br *bufio.Reader) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		now := time.Now()
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		s.mu.Lock()
		w := s.waiting[f[1]]
		switch {
		case w == nil:
		case f[0] == "A":
			w.ack = now
		case f[0] == "R":
			delete(s.waiting, f[1])
			r := result{ack: w.ack, done: now, ok: len(f) >= 4 && f[2] == "ok"}
			if len(f) >= 4 {
				if r.ok {
					r.pod = f[3]
				} else {
					r.why = f[3]
				}
			}
			w.done <- r
		}
		s.mu.Unlock()
	}
	// the claimer is gone: whoever still waits gets a failure
	s.mu.Lock()
	for id, w := range s.waiting {
		w.done <- result{done: time.Now(), why: "claimer-exited"}
		delete(s.waiting, id)
	}
	s.mu.Unlock()
}

func (s *pipeSession) claim(ctx context.Context, id string) result {
	w := &pipeWait{done: make(chan result, 1)}
	s.mu.Lock()
	s.waiting[id] = w
	s.mu.Unlock()
	sent := time.Now()
	s.wmu.Lock()
	_, err := io.WriteString(s.stdin, "C "+id+"\n")
	s.wmu.Unlock()
	if err != nil {
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
		return result{sent: sent, done: time.Now(), why: "write: " + err.Error()}
	}
	select {
	case r := <-w.done:
		r.sent = sent
		return r
	case <-ctx.Done():
		return result{sent: sent, why: "unanswered"}
	}
}

func (s *pipeSession) cpuSeconds() float64 { return procCPU(s.cmd.Process.Pid) }

// close ends the claimer: stdin closed (it drains), then killed if it still works on claims
// after 2 s (a rate-limited claimer may hold minutes of queued work).
func (s *pipeSession) close() {
	_ = s.stdin.Close()
	select {
	case <-s.exited:
	case <-time.After(2 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	if t := strings.TrimSpace(s.stderrText()); t != "" {
		fmt.Fprintf(os.Stderr, "peers: %s said (last 2 KB):\n%s\n", filepath.Base(s.cmd.Path), t)
	}
}

// procCPU reads utime+stime of a process from /proc (clock ticks of 1/100 s).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// ---- podclaimd, through its HTTP API ----------------------------------------------------------

type daemonSession struct {
	cmd    *exec.Cmd
	exited chan struct{}
	url    string
	path   string
	hc     *http.Client
	dir    string
}

func startDaemon(ctx context.Context, bin, kubeconfig, dir, ns, pool string, n int) (*daemonSession, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\nlog: {level: warn}\nkube:\n  kubeconfig: %s\npools:\n  - {namespace: %s, name: %s}\n",
		kubeconfig, ns, pool)
	cfgPath, portFile := filepath.Join(dir, "podclaimd.yaml"), filepath.Join(dir, "port")
	_ = os.Remove(portFile)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "podclaimd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfgPath, "--port-file", portFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start podclaimd: %w", err)
	}
	d := &daemonSession{cmd: cmd, exited: make(chan struct{}), dir: dir,
		path: fmt.Sprintf("/v1/pools/%s/%s/claims", ns, pool),
		hc:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024}}}
	go func() { _ = cmd.Wait(); logf.Close(); close(d.exited) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if b, err := os.ReadFile(portFile); err == nil && len(bytes.TrimSpace(b)) > 0 && d.url == "" {
			d.url = "http://127.0.0.1:" + strings.TrimSpace(string(b))
		}
		if d.url != "" && d.idle(ctx) >= n {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("podclaimd exited (log %s/podclaimd.log)", dir)
		case <-ctx.Done():
			d.close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.close()
			return nil, fmt.Errorf("podclaimd: pool not idle in 90 s (log %s/podclaimd.log)", dir)
		}
	}
}

func (d *daemonSession) idle(ctx context.Context) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+strings.TrimSuffix(d.path, "/claims"), nil)
	resp, err := d.hc.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var snap struct {
		IdleReady int  `json:"idleReady"`
		Synced    bool `json:"synced"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&snap) != nil || !snap.Synced {
		return -1
	}
	return snap.IdleReady
}

func (d *daemonSession) claim(ctx context.Context, id string) result {
	body := fmt.Sprintf(`{"claimId":%q,"labels":{%q:%q},"timeoutSeconds":120}`, id, LabelOwner, OwnerValue)
	sent := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+d.path, strings.NewReader(body))
	if err != nil {
		return result{sent: sent, done: time.Now(), why: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return result{sent: sent, why: "unanswered"}
		}
		return result{sent: sent, done: time.Now(), why: err.Error()}
	}
	defer resp.Body.Close()
	var ans struct {
		Pod   string `json:"pod"`
		Error string `json:"message"`
	}
	derr := json.NewDecoder(resp.Body).Decode(&ans)
	r := result{sent: sent, done: time.Now()}
	if resp.StatusCode == 200 && derr == nil && ans.Pod != "" {
		r.ok, r.pod = true, ans.Pod
	} else {
		r.why = fmt.Sprintf("http-%d", resp.StatusCode)
	}
	return r
}

func (d *daemonSession) cpuSeconds() float64 { return procCPU(d.cmd.Process.Pid) }

func (d *daemonSession) close() {
	d.hc.CloseIdleConnections()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

var errNoBinary = errors.New("binary not built")

func needBin(path string) error {
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		return fmt.Errorf("%s: %w", path, errNoBinary)
	}
	return nil
}
