package peers

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"podclaim.io/realk8s/cluster"
	"podclaim.io/realk8s/kubelet"
)

// Config of one run of the peers benchmark.
type Config struct {
	BinDir   string // kube-apiserver and etcd
	BuildDir string // the CMake build folder: bench/peers/pc_peer_claimer, daemon/podclaimd
	Self     string // the realk8s binary (its peer-claimer command runs the Go baselines)
	Dir      string // state: the cluster, logs, results.json
	CRDs     string // deploy/crds (a file or a folder for kubectl apply -f)

	Systems      []string      // names from systemNames, in column order; the first is the base
	Pools        []int         // warm pool sizes of the closed-loop cells
	Conc         []int         // concurrent claimers of the closed-loop cells
	Window       time.Duration // closed loop: claims are issued for this long
	Drain        time.Duration // then answers are awaited this long at most (else censored)
	Hold         time.Duration // a claimed pod goes back to Idle this long after its claim
	Burst        int           // the burst cell: pool size = claims fired at once (0 = skip)
	Sustained    time.Duration // a sustained run's length (0 = skip the scenario)
	Probe        time.Duration // the short runs that find where to look
	Rates        []float64     // offered rates tried, ascending
	P99Limit     time.Duration // a sustained rate passes when its p99 stays under this
	Log          io.Writer     // progress
	AgentSandbox *AgentSandbox // the public controller, built by hand outside the tree; nil = skip
}

// systemNames: every system the harness knows, in the table's order.
var systemNames = []string{"podclaim", "podclaimd", "client-go", "client-go-5qps", "unguarded", "agent-sandbox"}

type harness struct {
	cfg        Config
	harnessCS  kubernetes.Interface // user peers-harness: its writes are not any system's
	harnessDyn dynamic.Interface
	cl         *cluster.Cluster
	pools      *pools
	audit      *auditLog
	ns         string
	log        io.Writer
}

// Main is `realk8s peers`: the whole benchmark, one table.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	var c Config
	var systems, poolsF, conc, rates string
	fs.StringVar(&c.BinDir, "bin", "", "folder with kube-apiserver and etcd")
	fs.StringVar(&c.BuildDir, "build", "", "CMake build folder (pc_peer_claimer, podclaimd)")
	fs.StringVar(&c.Dir, "dir", "", "state folder (created; default a temporary one)")
	fs.StringVar(&c.CRDs, "crds", "", "podclaim's CRD manifests (deploy/crds)")
	fs.StringVar(&systems, "systems", "podclaim,podclaimd,client-go,client-go-5qps,unguarded", "systems, the first is the ratios' base: "+strings.Join(systemNames, ","))
	fs.StringVar(&poolsF, "pools", "100,1000", "warm pool sizes")
	fs.StringVar(&conc, "conc", "1,20,200", "concurrent claimers")
	fs.DurationVar(&c.Window, "window", 10*time.Second, "closed loop: issue claims for this long")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "then wait this long for answers at most")
	fs.DurationVar(&c.Hold, "hold", 100*time.Millisecond, "claimed -> Idle after this (the harness's recycler)")
	fs.IntVar(&c.Burst, "burst", 300, "burst: warm pods = claims fired at once (0 = skip)")
	fs.DurationVar(&c.Sustained, "sustained", 60*time.Second, "sustained: length of a confirming run (0 = skip)")
	fs.DurationVar(&c.Probe, "probe", 5*time.Second, "sustained: length of a probing run")
	fs.StringVar(&rates, "rates", "1,2,5,10,20,50,100,200,300,500,700,1000,1500,2000,3000", "sustained: offered rates tried (claims/s)")
	fs.DurationVar(&c.P99Limit, "p99-limit", 100*time.Millisecond, "sustained: a rate passes when p99 stays under this")
	smoke := fs.Bool("smoke", false, "a short run for the test suite: small pools, short cells; fails on a broken invariant")
	asBin := fs.String("agent-sandbox-bin", "", "agent-sandbox controller binary built by hand (docs/peers.md); adds the system agent-sandbox")
	asCRDs := fs.String("agent-sandbox-crds", "", "folder of agent-sandbox's CRD manifests (its k8s/crds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *smoke {
		poolsF, conc, c.Window, c.Drain, c.Burst = "20", "1,5", 2*time.Second, 10*time.Second, 20
		c.Sustained, c.Probe, rates = 3*time.Second, 2*time.Second, "5,20"
	}
	var err error
	c.Systems = strings.Split(systems, ",")
	if *asBin != "" {
		c.AgentSandbox = &AgentSandbox{Bin: *asBin, CRDs: *asCRDs}
		if !strings.Contains(systems, "agent-sandbox") {
			c.Systems = append(c.Systems, "agent-sandbox")
		}
	}
	if c.Pools, err = ints(poolsF); err != nil {
		return fmt.Errorf("--pools: %w", err)
	}
	if c.Conc, err = ints(conc); err != nil {
		return fmt.Errorf("--conc: %w", err)
	}
	for _, r := range strings.Split(rates, ",") {
		v, err := strconv.ParseFloat(r, 64)
		if err != nil {
			return fmt.Errorf("--rates: %w", err)
		}
		c.Rates = append(c.Rates, v)
	}
	if c.BinDir == "" || c.BuildDir == "" || c.CRDs == "" {
		return errors.New("--bin, --build and --crds are required")
	}
	if c.Self, err = os.Executable(); err != nil {
		return err
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "realk8s-peers."); err != nil {
			return err
		}
		defer os.RemoveAll(c.Dir)
	}
	c.Log = os.Stderr
	rep, err := Run(ctx, c)
	if err != nil {
		return err
	}
	rep.print(os.Stdout, c)
	if *smoke {
		return rep.smokeCheck(c)
	}
	return nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q: want positive integers", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// Run brings up the cluster, runs every cell and returns the figures.
func Run(ctx context.Context, cfg Config) (*report, error) {
	h := &harness{cfg: cfg, ns: "peers", log: cfg.Log}
	users := []string{"peers-harness"}
	sys := map[string]system{}
	for _, s := range h.systems() {
		sys[s.name] = s
		users = append(users, s.user)
	}
	for _, n := range cfg.Systems {
		if _, ok := sys[n]; !ok {
			return nil, fmt.Errorf("unknown system %q (want %s)", n, strings.Join(systemNames, ","))
		}
	}
	h.logf("starting etcd + kube-apiserver (audit log on) in %s", cfg.Dir)
	cl, err := cluster.Start(ctx, cluster.Config{BinDir: cfg.BinDir, Dir: filepath.Join(cfg.Dir, "cluster"), Log: h.log,
		AuditLog: true, Users: users})
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	h.cl, h.audit = cl, &auditLog{path: cl.AuditPath}
	rc, err := clientcmd.BuildConfigFromFlags("", cl.UserKubeconfig("peers-harness"))
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.UserAgent = -1, "peers-harness"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	h.harnessCS = cs
	if h.harnessDyn, err = dynamic.NewForConfig(rc); err != nil {
		return nil, err
	}
	kctx, kcancel := context.WithCancel(ctx)
	kdone := make(chan error, 1)
	go func() {
		kdone <- kubelet.New(cs, kubelet.Config{Node: "realk8s-node", StartDelay: 100 * time.Millisecond,
			StopDelay: 20 * time.Millisecond, Log: h.log}).Run(kctx)
	}()
	defer func() { kcancel(); <-kdone }()
	if err := h.installCRDs(ctx, cs); err != nil {
		return nil, err
	}
	if h.pools, err = newPools(ctx, cs, h.ns); err != nil {
		return nil, err
	}
	defer h.pools.stop()
	all := append([]int(nil), cfg.Pools...)
	if cfg.Burst > 0 {
		all = append(all, cfg.Burst)
	}
	for _, n := range all {
		if err := h.pools.ensure(ctx, poolName(n), n); err != nil {
			return nil, err
		}
	}
	for _, n := range all {
		if err := h.pools.reset(ctx, poolName(n), n, -1); err != nil {
			return nil, err
		}
	}
	h.logf("pools ready: %v warm pods", all)

	rep := &report{Systems: cfg.Systems, Started: time.Now()}
	var order []system
	for _, n := range cfg.Systems {
		order = append(order, sys[n])
	}
	// Cells are interleaved (every system in turn for one cell shape) so a burst of someone
	// else's work on the shared machine spoils one shape for all, not one system.
	for _, n := range cfg.Pools {
		for _, c := range cfg.Conc {
			for _, s := range order {
				r, err := h.closedCell(ctx, s, n, c)
				if err != nil {
					return nil, fmt.Errorf("%s, pool %d, %d claimers: %w", s.name, n, c, err)
				}
				rep.Closed = append(rep.Closed, r)
			}
		}
	}
	if cfg.Burst > 0 {
		for _, s := range order {
			r, err := h.burstCell(ctx, s, cfg.Burst)
			if err != nil {
				return nil, fmt.Errorf("%s, burst: %w", s.name, err)
			}
			rep.Bursts = append(rep.Bursts, r)
		}
	}
	if cfg.Sustained > 0 {
		n := cfg.Pools[len(cfg.Pools)-1]
		for _, s := range order {
			r, err := h.sustained(ctx, s, n)
			if err != nil {
				return nil, fmt.Errorf("%s, sustained: %w", s.name, err)
			}
			rep.Sustained = append(rep.Sustained, r)
		}
	}
	rep.Finished = time.Now()
	b, err := json.MarshalIndent(rep, "", " ")
	if err == nil {
		err = os.WriteFile(filepath.Join(cfg.Dir, "results.json"), b, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("results.json: %w", err)
	}
	return rep, nil
}

func poolName(n int) string { return "p" + strconv.Itoa(n) }

func (h *harness) logf(format string, a ...any) {
	fmt.Fprintf(h.log, "peers: "+format+"\n", a...)
}

// systems: how each one is started. Users are the names the audit log counts writes by.
func (h *harness) systems() []system {
	b := h.cfg.BuildDir
	goClaimer := func(name, sysflag string, qps float64, burst int) system {
		return system{name: name, user: "peers-" + name, start: func(ctx context.Context, h *harness, pool string, n int) (session, error) {
			return startPipe(ctx, h.cfg.Self, "peer-claimer", "--system", sysflag,
				"--kubeconfig", h.cl.UserKubeconfig("peers-"+name), "--namespace", h.ns, "--pool", pool,
				"--qps", strconv.FormatFloat(qps, 'g', -1, 64), "--burst", strconv.Itoa(burst))
		}}
	}
	return []system{
		{name: "podclaim", user: "peers-podclaim", start: func(ctx context.Context, h *harness, pool string, n int) (session, error) {
			bin := filepath.Join(b, "bench", "peers", "pc_peer_claimer")
			if err := needBin(bin); err != nil {
				return nil, err
			}
			return startPipe(ctx, bin, "--kubeconfig", h.cl.UserKubeconfig("peers-podclaim"),
				"--namespace", h.ns, "--pool", pool, "--min-idle", strconv.Itoa(n))
		}},
		{name: "podclaimd", user: "peers-podclaimd", start: func(ctx context.Context, h *harness, pool string, n int) (session, error) {
			bin := filepath.Join(b, "daemon", "podclaimd")
			if err := needBin(bin); err != nil {
				return nil, err
			}
			return startDaemon(ctx, bin, h.cl.UserKubeconfig("peers-podclaimd"), filepath.Join(h.cfg.Dir, "podclaimd"), h.ns, pool, n)
		}},
		// client-go's defaults (5 QPS, burst 10) as a fresh rest.Config has them, and with
		// the client-side limit off, as agent-sandbox's controller runs by default
		goClaimer("client-go-5qps", "clientgo", 5, 10),
		goClaimer("client-go", "clientgo", -1, 10),
		goClaimer("unguarded", "unguarded", -1, 10),
		{name: "agent-sandbox", user: "peers-agent-sandbox", start: func(ctx context.Context, h *harness, pool string, n int) (session, error) {
			if h.cfg.AgentSandbox == nil {
				return nil, errors.New("agent-sandbox needs --agent-sandbox-bin (built by hand, docs/peers.md)")
			}
			return h.cfg.AgentSandbox.start(ctx, h, pool, n)
		}},
	}
}

// ---- cells -------------------------------------------------------------------------------------

// cell is what one system did in one cell.
type cell struct {
	System       string
	Pool, Conc   int
	Rate         float64 `json:",omitempty"`
	Window       time.Duration
	OK, Failed   int
	Unanswered   int
	ClaimsPerSec float64
	Latency      dist // claim -> usable, seconds; +Inf = unanswered
	Ack          dist `json:",omitempty"` // claim -> accepted (burst)
	AllServed    time.Duration
	Writes       writes
	Doubles      int
	CPUSeconds   float64
	FailReasons  map[string]int `json:",omitempty"`
	// the slowest claim sent in each second of the cell (+Inf: one went unanswered)
	WorstBySecond dist
}

func (c *cell) writesPerClaim() float64 {
	if c.OK == 0 {
		return math.NaN()
	}
	return float64(c.Writes.Total) / float64(c.OK)
}

func (c *cell) cpuPer1000() float64 {
	if c.OK == 0 {
		return math.NaN()
	}
	return c.CPUSeconds / float64(c.OK) * 1000
}

// run drives one cell: the pool reset, the claimer started, issue() fires the claims, then the
// claimer's CPU, the server's count of its writes and the audit of double claims are read.
func (h *harness) run(ctx context.Context, s system, n int, hold time.Duration, tag string,
	issue func(ctx context.Context, ss session, next func() string, add func(result)) time.Duration) (*cell, error) {
	if err := h.pools.reset(ctx, poolName(n), n, hold); err != nil {
		return nil, err
	}
	ss, err := s.start(ctx, h, poolName(n), n)
	if err != nil {
		return nil, err
	}
	c := &cell{System: s.name, Pool: n, FailReasons: map[string]int{}}
	mark, err := h.audit.mark()
	if err != nil {
		ss.close()
		return nil, err
	}
	cpu0 := ss.cpuSeconds()
	var mu sync.Mutex
	seq := 0
	next := func() string {
		mu.Lock()
		defer mu.Unlock()
		seq++
		return fmt.Sprintf("%s-%06d", tag, seq)
	}
	var results []result
	add := func(r result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}
	c.Window = issue(ctx, ss, next, add)
	c.CPUSeconds = ss.cpuSeconds() - cpu0
	ss.close()
	first, last := time.Time{}, time.Time{}
	for _, r := range results {
		switch {
		case r.ok:
			c.OK++
			c.Latency = append(c.Latency, seconds(r.done.Sub(r.sent)))
			ack := r.ack
			if ack.IsZero() {
				ack = r.done
			}
			c.Ack = append(c.Ack, seconds(ack.Sub(r.sent)))
			if r.done.After(last) {
				last = r.done
			}
		case r.done.IsZero():
			c.Unanswered++
			c.Latency = append(c.Latency, math.Inf(1))
		default:
			c.Failed++
			c.FailReasons[reason(r.why)]++
		}
		if first.IsZero() || r.sent.Before(first) {
			first = r.sent
		}
	}
	if c.Unanswered == 0 && c.OK > 0 {
		c.AllServed = last.Sub(first)
	}
	// the slowest claim sent in each second of the cell: a stall of the shared machine shows
	// as a few bad seconds, a system that cannot keep up as a climb
	for _, r := range results {
		i := int(r.sent.Sub(first) / time.Second)
		for len(c.WorstBySecond) <= i {
			c.WorstBySecond = append(c.WorstBySecond, 0)
		}
		l := math.Inf(1)
		if !r.done.IsZero() {
			l = seconds(r.done.Sub(r.sent))
		}
		c.WorstBySecond[i] = math.Max(c.WorstBySecond[i], l)
	}
	c.Latency, c.Ack = c.Latency.sorted(), c.Ack.sorted()
	h.audit.settle(5 * time.Second)
	if c.Writes, err = h.audit.count(mark, s.user); err != nil {
		return nil, err
	}
	if d, ok := ss.(interface{ doubles() int }); ok {
		c.Doubles = d.doubles()
		return c, nil
	}
	// the harness's watch may trail the last answers by a moment
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, seen := h.pools.audit(tag)
		c.Doubles = d
		if seen >= c.OK || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c, nil
}

// reason keeps what a failure says without the names in it ("update pod p300-x: client rate
// limiter Wait returned an error" -> "client rate limiter Wait returned an error"), so equal
// causes count together.
func reason(s string) string {
	if _, rest, ok := strings.Cut(s, ":_"); ok {
		s = rest
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

func short(name string) string {
	return map[string]string{"podclaim": "pc", "podclaimd": "pcd", "client-go": "cg", "client-go-5qps": "cg5",
		"unguarded": "ug", "agent-sandbox": "as"}[name]
}

// closedCell: conc claimers, each claiming again as soon as its claim is answered, for the
// window; then the answers still due are awaited for the drain at most.
func (h *harness) closedCell(ctx context.Context, s system, n, conc int) (*cell, error) {
	tag := fmt.Sprintf("%s-p%d-c%d", short(s.name), n, conc)
	h.logf("%-15s pool %4d, %3d claimers, %s", s.name, n, conc, h.cfg.Window)
	var inWindow atomic.Int64
	c, err := h.run(ctx, s, n, h.cfg.Hold, tag, func(ctx context.Context, ss session, next func() string, add func(result)) time.Duration {
		dctx, cancel := context.WithTimeout(ctx, h.cfg.Window+h.cfg.Drain)
		defer cancel()
		end := time.Now().Add(h.cfg.Window)
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && dctx.Err() == nil {
					r := ss.claim(dctx, next())
					add(r)
					if r.ok && !r.done.After(end) {
						inWindow.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return h.cfg.Window
	})
	if err != nil {
		return nil, err
	}
	c.Conc = conc
	// the rate is what was answered inside the window; answers in the drain after it are
	// in the latencies, not in the rate
	c.ClaimsPerSec = float64(inWindow.Load()) / h.cfg.Window.Seconds()
	h.logf("%-15s   %d ok (%.0f/s), %d failed, %d unanswered, p99 %s ms, %.2f writes/claim, %d double",
		s.name, c.OK, c.ClaimsPerSec, c.Failed, c.Unanswered, fmtMs(c.Latency.q(0.99), h.cfg.Drain), c.writesPerClaim(), c.Doubles)
	return c, nil
}

// burstCell: the peer's claims-warm phase. A pool of n Ready pods (no recycling), n claims
// fired at once (one goroutine each, released together).
func (h *harness) burstCell(ctx context.Context, s system, n int) (*cell, error) {
	tag := fmt.Sprintf("%s-burst%d", short(s.name), n)
	h.logf("%-15s burst of %d claims on %d warm pods", s.name, n, n)
	c, err := h.run(ctx, s, n, -1, tag, func(ctx context.Context, ss session, next func() string, add func(result)) time.Duration {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		release := make(chan struct{})
		var wg sync.WaitGroup
		for range n {
			id := next()
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-release
				add(ss.claim(dctx, id))
			}()
		}
		t0 := time.Now()
		close(release)
		wg.Wait()
		return time.Since(t0)
	})
	if err != nil {
		return nil, err
	}
	c.Conc = n
	h.logf("%-15s   %d ok, all served in %s, usable p50 %s p99 %s ms, %d double", s.name, c.OK,
		c.AllServed.Round(time.Millisecond), fmtMs(c.Latency.q(0.5), 0), fmtMs(c.Latency.q(0.99), 2*time.Minute), c.Doubles)
	return c, nil
}

// openCell offers claims at `rate` for d: claim k is due at t0 + k/rate and sent then (one
// goroutine each, so a slow answer never delays the next claim), its latency counted from
// when it was due.
func (h *harness) openCell(ctx context.Context, s system, n int, rate float64, d time.Duration) (*cell, error) {
	tag := fmt.Sprintf("%s-r%g-%d", short(s.name), rate, time.Now().UnixMilli()%100000)
	c, err := h.run(ctx, s, n, h.cfg.Hold, tag, func(ctx context.Context, ss session, next func() string, add func(result)) time.Duration {
		dctx, cancel := context.WithTimeout(ctx, d+h.cfg.Drain)
		defer cancel()
		var wg sync.WaitGroup
		t0 := time.Now()
		for k := 0; ; k++ {
			due := t0.Add(time.Duration(float64(k) / rate * float64(time.Second)))
			if due.Sub(t0) >= d || dctx.Err() != nil {
				break
			}
			time.Sleep(time.Until(due))
			id := next()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := ss.claim(dctx, id)
				r.sent = due
				add(r)
			}()
		}
		wg.Wait()
		return d
	})
	if err != nil {
		return nil, err
	}
	c.Rate = rate
	c.ClaimsPerSec = float64(c.OK) / d.Seconds()
	return c, nil
}

// sustainedResult: the highest offered rate whose p99 stayed under the limit for the whole run.
type sustainedResult struct {
	System string
	Best   *cell   // the confirming run at the rate found; nil = none passed
	Probes []*cell // the probing runs, ascending
	Tried  []*cell // the confirming runs, in order
}

func (h *harness) passes(c *cell) bool {
	return c.Failed == 0 && c.Unanswered == 0 && c.OK > 0 && c.Latency.q(0.99) < h.cfg.P99Limit.Seconds() &&
		c.Doubles == 0
}

// sustained probes the rates upwards with short runs until one fails, then confirms the last
// passing rate with a full-length run, stepping down the ladder while the full run fails.
func (h *harness) sustained(ctx context.Context, s system, n int) (*sustainedResult, error) {
	res := &sustainedResult{System: s.name}
	best := -1
	for i, r := range h.cfg.Rates {
		c, err := h.openCell(ctx, s, n, r, h.cfg.Probe)
		if err != nil {
			return nil, err
		}
		res.Probes = append(res.Probes, c)
		ok := h.passes(c)
		h.logf("%-15s probe %6g/s for %s: p99 %s ms, %d failed, %d unanswered: %v", s.name, r, h.cfg.Probe,
			fmtMs(c.Latency.q(0.99), h.cfg.Drain), c.Failed, c.Unanswered, map[bool]string{true: "pass", false: "fail"}[ok])
		if !ok {
			break
		}
		best = i
	}
	for i := best; i >= 0 && i > best-3; i-- {
		c, err := h.openCell(ctx, s, n, h.cfg.Rates[i], h.cfg.Sustained)
		if err != nil {
			return nil, err
		}
		res.Tried = append(res.Tried, c)
		ok := h.passes(c)
		h.logf("%-15s %6g/s for %s: p99 %s ms: %v", s.name, h.cfg.Rates[i], h.cfg.Sustained,
			fmtMs(c.Latency.q(0.99), h.cfg.Drain), map[bool]string{true: "pass", false: "fail"}[ok])
		if ok {
			res.Best = c
			break
		}
	}
	return res, nil
}
