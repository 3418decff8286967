// Package front puts a kapi-sim-shaped face on the real kube-apiserver for one test, so that
// podclaim's kube tests run unchanged against either server (tests/kube/ksim.c starts it in
// place of kapi-sim when PODCLAIM_KUBE_SERVER=real):
//
//   - every Kubernetes API request is forwarded to the real server (its answers, objects,
//     versions and watch streams are the real ones); the front only adds kapi-sim's injected
//     faults (latency, 409/429/5xx rates, watch drops and delays) when asked to;
//   - --pool NS/NAME=N creates the SandboxPool on the real server, and a test-only recycler
//     plays the pool controller kapi-sim has built in (Starting -> Idle when Ready, claimed ->
//     Stopping -> Idle) until podclaimd has its own (issue 13);
//   - /sim/claims is the audit of every Idle -> other transition, taken from the real server's
//     watch of its own pod objects; /sim/stats, /sim/faults and /sim/compact as in kapi-sim
//     (compaction is simulated here: a watch resuming from before it gets 410 Expired from
//     the front, since etcd compaction alone does not expire the apiserver's watch cache).
package front

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type latency struct{ fixed, jitter time.Duration }

// Faults is the /sim/faults document of kapi-sim (the same JSON field names).
type Faults struct {
	Latency           map[string]map[string]int64 `json:"latency"`
	ConflictRate      float64                     `json:"conflictRate"`
	ThrottleRate      float64                     `json:"throttleRate"`
	RetryAfterSeconds int                         `json:"retryAfterSeconds"`
	ErrorRate         float64                     `json:"errorRate"`
	ErrorCode         int                         `json:"errorCode"`
	WatchDropEvents   int64                       `json:"watchDropEvents"`
	WatchDropMs       int64                       `json:"watchDropMs"`
	WatchDelayMs      int64                       `json:"watchDelayMs"`
}

type server struct {
	upstream  string
	token     string // the real server's bearer token
	ourToken  string // --token: what clients of the front must send; "" = none
	client    *http.Client
	mu        sync.Mutex // guards faults, compactRV
	faults    Faults
	lat       map[string]latency
	compactRV uint64
	rec       *recorder
	requests  atomic.Int64
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// Main parses kapi-sim's flags, starts pools, recorder and recycler, and serves until ctx ends.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("front", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "the real server")
	listen := fs.String("listen", "127.0.0.1:0", "address to serve")
	portFile := fs.String("port-file", "", "write the bound port here, atomically")
	token := fs.String("token", "", "require this bearer token")
	cert := fs.String("tls-cert", "", "serve HTTPS with this certificate")
	key := fs.String("tls-key", "", "key for --tls-cert")
	var pools, lats multi
	fs.Var(&pools, "pool", "NS/NAME=N (repeatable)")
	fs.Var(&lats, "latency", "VERB=MS[+JITTER] (repeatable)")
	warm := fs.Int64("warmup-ms", 100, "Starting -> Idle after Ready")
	hold := fs.Int64("hold-ms", 500, "claimed -> Stopping")
	stop := fs.Int64("stop-ms", 20, "Stopping -> Idle")
	f := Faults{RetryAfterSeconds: 1, ErrorCode: 500}
	fs.Float64Var(&f.ConflictRate, "conflict-rate", 0, "")
	fs.Float64Var(&f.ThrottleRate, "throttle-rate", 0, "")
	fs.IntVar(&f.RetryAfterSeconds, "retry-after", 1, "")
	fs.Float64Var(&f.ErrorRate, "error-rate", 0, "")
	fs.IntVar(&f.ErrorCode, "error-code", 500, "")
	fs.Int64Var(&f.WatchDropEvents, "watch-drop-events", 0, "")
	fs.Int64Var(&f.WatchDropMs, "watch-drop-ms", 0, "")
	fs.Int64Var(&f.WatchDelayMs, "watch-delay-ms", 0, "")
	// kapi-sim tuning flags that have no meaning in front of a real server
	for _, n := range []string{"history", "bookmark-ms", "claims-max", "watch-batch-us", "compact-every-ms", "conn-timeout-s"} {
		fs.String(n, "", "ignored (kapi-sim only)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %q: %w", *kubeconfig, err)
	}
	rc.QPS, rc.Burst = 1000, 2000
	s := &server{upstream: strings.TrimRight(rc.Host, "/"), token: rc.BearerToken, ourToken: *token, faults: f}
	if err := s.setLatency(lats); err != nil {
		return err
	}
	if s.client, err = upstreamClient(rc); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	s.rec = newRecorder(cs)
	if err := s.rec.start(ctx); err != nil {
		return err
	}
	rcy := &recycler{cs: cs, dyn: dyn, rec: s.rec, warm: ms(*warm), hold: ms(*hold), stop: ms(*stop)}
	for _, p := range pools {
		if err := rcy.addPool(ctx, p); err != nil {
			return err
		}
	}
	go rcy.run(ctx)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if *cert != "" {
			errc <- hs.ServeTLS(ln, *cert, *key)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	fmt.Printf("realk8s front listening on %s://127.0.0.1:%d -> %s\n", map[bool]string{true: "https", false: "http"}[*cert != ""], port, s.upstream)
	if *portFile != "" {
		tmp := fmt.Sprintf("%s.tmp.%d", *portFile, os.Getpid())
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			return fmt.Errorf("port file: %w", err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			return fmt.Errorf("port file: %w", err)
		}
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

func upstreamClient(rc *rest.Config) (*http.Client, error) {
	tc := &tls.Config{}
	if rc.TLSClientConfig.CAFile != "" || len(rc.TLSClientConfig.CAData) > 0 {
		ca := rc.TLSClientConfig.CAData
		if len(ca) == 0 {
			b, err := os.ReadFile(rc.TLSClientConfig.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA: %w", err)
			}
			ca = b
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		tc.RootCAs = pool
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 256,
		ForceAttemptHTTP2: false}}, nil
}

func (s *server) setLatency(specs []string) error {
	s.lat = map[string]latency{}
	for _, sp := range specs {
		verb, v, ok := strings.Cut(sp, "=")
		fixed, jit, _ := strings.Cut(v, "+")
		a, err1 := strconv.ParseInt(fixed, 10, 64)
		b := int64(0)
		var err2 error
		if jit != "" {
			b, err2 = strconv.ParseInt(jit, 10, 64)
		}
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("--latency %s: want VERB=MS[+JITTER]", sp)
		}
		verbs := []string{verb}
		if verb == "all" {
			verbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "other"}
		}
		for _, vb := range verbs {
			s.lat[vb] = latency{ms(a), ms(b)}
		}
	}
	return nil
}

// verbOf classifies a request the way kapi-sim counts it.
func verbOf(r *http.Request) string {
	p := strings.Trim(r.URL.Path, "/")
	segs := strings.Split(p, "/")
	isRes := (len(segs) >= 3 && segs[0] == "api") || (len(segs) >= 4 && segs[0] == "apis")
	if !isRes {
		return "other"
	}
	rest := segs[2:]
	if segs[0] == "apis" {
		rest = segs[3:]
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	named := len(rest) >= 2
	switch r.Method {
	case http.MethodGet:
		if named {
			return "get"
		}
		if w := r.URL.Query(); w.Has("watch") && w.Get("watch") != "0" && !strings.EqualFold(w.Get("watch"), "false") {
			return "watch"
		}
		return "list"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return "other"
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string, retry int) {
	st := map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code}
	if retry > 0 {
		st["details"] = map[string]any{"retryAfterSeconds": retry}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.ourToken != "" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/livez" &&
		r.Header.Get("Authorization") != "Bearer "+s.ourToken {
		writeStatus(w, 401, "Unauthorized", "Unauthorized", 0)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/sim/") {
		s.serveSim(w, r)
		return
	}
	verb := verbOf(r)
	s.mu.Lock()
	f, l, compactRV := s.faults, s.lat[verb], s.compactRV
	s.mu.Unlock()
	if l.fixed > 0 || l.jitter > 0 {
		time.Sleep(l.fixed + time.Duration(rand.Float64()*float64(l.jitter)))
	}
	if verb != "other" {
		switch {
		case f.ThrottleRate > 0 && rand.Float64() < f.ThrottleRate:
			writeStatus(w, 429, "TooManyRequests", "Too many requests, please try again later.", f.RetryAfterSeconds)
			return
		case f.ErrorRate > 0 && rand.Float64() < f.ErrorRate:
			reason := "InternalError"
			if f.ErrorCode == 503 {
				reason = "ServiceUnavailable"
			}
			writeStatus(w, f.ErrorCode, reason, "injected server error", 0)
			return
		case (verb == "patch" || verb == "update") && f.ConflictRate > 0 && rand.Float64() < f.ConflictRate:
			writeStatus(w, 409, "Conflict", "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected)", 0)
			return
		}
	}
	if verb == "watch" && compactRV > 0 {
		if rv, err := strconv.ParseUint(r.URL.Query().Get("resourceVersion"), 10, 64); err == nil && rv > 0 && rv < compactRV {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			fmt.Fprintf(w, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: %d (%d)","reason":"Expired","code":410}}`+"\n", rv, compactRV)
			return
		}
	}
	s.forward(w, r, verb, f)
}

func (s *server) forward(w http.ResponseWriter, r *http.Request, verb string, f Faults) {
	ureq, err := http.NewRequestWithContext(r.Context(), r.Method, s.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		writeStatus(w, 500, "InternalError", err.Error(), 0)
		return
	}
	for k, vs := range r.Header {
		if k == "Authorization" || k == "Connection" {
			continue
		}
		ureq.Header[k] = vs
	}
	ureq.ContentLength = r.ContentLength
	ureq.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(ureq)
	if err != nil {
		writeStatus(w, 502, "InternalError", "upstream: "+err.Error(), 0)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if k == "Content-Length" && verb == "watch" {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	if verb != "watch" {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	// A watch: line by line, so the injected delay and drops apply per event.
	var dropAt <-chan time.Time
	if f.WatchDropMs > 0 {
		t := time.NewTimer(ms(f.WatchDropMs))
		defer t.Stop()
		dropAt = t.C
	}
	type line struct {
		b  []byte
		at time.Time
	}
	lines := make(chan line, 1024)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(resp.Body, 1<<20)
		for {
			b, err := br.ReadBytes('\n')
			if len(b) > 0 {
				lines <- line{b, time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	var sent int64
	for {
		select {
		case <-dropAt:
			panic(http.ErrAbortHandler) // cut without the terminating chunk, like kapi-sim
		case l, ok := <-lines:
			if !ok {
				return
			}
			if d := ms(f.WatchDelayMs); d > 0 {
				if wait := time.Until(l.at.Add(d)); wait > 0 {
					time.Sleep(wait)
				}
			}
			if _, err := w.Write(l.b); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			if !strings.Contains(string(l.b[:min(len(l.b), 40)]), `"BOOKMARK"`) {
				sent++
				if f.WatchDropEvents > 0 && sent >= f.WatchDropEvents {
					panic(http.ErrAbortHandler)
				}
			}
		}
	}
}

func (s *server) serveSim(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	switch {
	case r.URL.Path == "/sim/claims" && r.Method == http.MethodGet:
		since, err := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
		if r.URL.Query().Get("since") == "" {
			since, err = 0, nil
		}
		if err != nil {
			writeStatus(w, 400, "BadRequest", "since: want a number", 0)
			return
		}
		if err := s.rec.catchUp(r.Context()); err != nil {
			writeStatus(w, 503, "ServiceUnavailable", err.Error(), 1)
			return
		}
		_ = enc.Encode(s.rec.claims(int(since)))
	case r.URL.Path == "/sim/stats" && r.Method == http.MethodGet:
		rv := s.rec.lastRV()
		_ = enc.Encode(map[string]any{"requestsTotal": s.requests.Load(),
			"objects": map[string]any{"pods": s.rec.podCount()},
			"history": map[string]any{"resourceVersion": rv}})
	case r.URL.Path == "/sim/faults" && r.Method == http.MethodGet:
		s.mu.Lock()
		f := s.faults
		s.mu.Unlock()
		_ = enc.Encode(f)
	case r.URL.Path == "/sim/faults" && r.Method == http.MethodPut:
		var raw map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
			writeStatus(w, 400, "BadRequest", err.Error(), 0)
			return
		}
		s.mu.Lock()
		f := s.faults
		if string(raw["reset"]) == "true" {
			f = Faults{RetryAfterSeconds: 1, ErrorCode: 500}
		}
		b, _ := json.Marshal(raw)
		err := json.Unmarshal(b, &f)
		if err == nil {
			s.faults = f
		}
		s.mu.Unlock()
		if err != nil {
			writeStatus(w, 400, "BadRequest", err.Error(), 0)
			return
		}
		if string(raw["compactNow"]) == "true" {
			s.compact()
		}
		_ = enc.Encode(f)
	case r.URL.Path == "/sim/compact" && r.Method == http.MethodPost:
		_ = enc.Encode(map[string]any{"compacted": s.compact()})
	default:
		writeStatus(w, 404, "NotFound", "no /sim endpoint "+r.Method+" "+r.URL.Path, 0)
	}
}

// compact makes every resourceVersion up to the current one too old to resume a watch from.
func (s *server) compact() uint64 {
	rv := s.rec.lastRV()
	s.mu.Lock()
	if rv > s.compactRV {
		s.compactRV = rv
	}
	c := s.compactRV
	s.mu.Unlock()
	return c
}
