package peers

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCountEvents(t *testing.T) {
	line := func(user, verb, res, sub, stage string, code int) string {
		return `{"kind":"Event","stage":"` + stage + `","verb":"` + verb + `","user":{"username":"` + user +
			`"},"objectRef":{"resource":"` + res + `","subresource":"` + sub + `"},"responseStatus":{"code":` + itoa(code) + `}}` + "\n"
	}
	log := line("peers-a", "patch", "pods", "", "ResponseComplete", 200) +
		line("peers-a", "update", "pods", "", "ResponseComplete", 409) +
		line("peers-a", "update", "sandboxclaims", "status", "ResponseComplete", 200) +
		line("peers-ab", "patch", "pods", "", "ResponseComplete", 200) + // another user, a longer name
		line("peers-a", "create", "pods", "", "ResponseStarted", 200) + // not a completed request
		`{"stage":"ResponseComplete","verb":"patch","user":{"username":"peers-a"}` // still being written
	for _, tc := range []struct {
		user             string
		total, conflicts int
		byVerb           map[string]int
	}{
		{"peers-a", 3, 1, map[string]int{"patch pods": 1, "update pods": 1, "update sandboxclaims/status": 1}},
		{"peers-ab", 1, 0, map[string]int{"patch pods": 1}},
		{"nobody", 0, 0, map[string]int{}},
	} {
		w := writes{ByVerb: map[string]int{}}
		if err := countEvents(strings.NewReader(log), tc.user, &w); err != nil {
			t.Fatal(err)
		}
		if w.Total != tc.total || w.Conflicts != tc.conflicts || len(w.ByVerb) != len(tc.byVerb) {
			t.Errorf("%s: got %+v, want total %d conflicts %d by verb %v", tc.user, w, tc.total, tc.conflicts, tc.byVerb)
		}
		for k, v := range tc.byVerb {
			if w.ByVerb[k] != v {
				t.Errorf("%s: %s = %d, want %d", tc.user, k, w.ByVerb[k], v)
			}
		}
	}
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestQuantiles(t *testing.T) {
	d := dist{5, 1, 4, 2, 3, math.Inf(1)}.sorted()
	for _, tc := range []struct {
		p    float64
		want float64
	}{{0.5, 3}, {0.01, 1}, {0.8, 5}, {0.99, math.Inf(1)}, {1, math.Inf(1)}} {
		if got := d.q(tc.p); got != tc.want {
			t.Errorf("q(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(dist(nil).q(0.5)) {
		t.Error("the quantile of nothing must be NaN")
	}
}

func TestCellOf(t *testing.T) {
	for in, want := range map[string]string{"pc-p100-c20-000012": "pc-p100-c20", "cg-burst300-000001": "cg-burst300", "x": "x"} {
		if got := cellOf(in); got != want {
			t.Errorf("cellOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSmokeRealServer runs the short variant of the whole benchmark (its own kube-apiserver,
// every system on a pool of 20, every scenario shortened) and requires the invariants
// report.smokeCheck holds: each system claims, no guarded system double-claims, podclaim
// writes once per claim, the client-go way three times. It needs the binaries:
// REALK8S_BIN (the realk8s binary beside kube-apiserver and etcd) and PODCLAIM_BUILD (the CMake
// build folder with pc_peer_claimer and podclaimd); scripts/realk8s-tests.sh sets both.
func TestSmokeRealServer(t *testing.T) {
	self, build := os.Getenv("REALK8S_BIN"), os.Getenv("PODCLAIM_BUILD")
	if self == "" || build == "" {
		if os.Getenv("REALK8S_REQUIRED") == "1" {
			t.Fatal("REALK8S_BIN and PODCLAIM_BUILD are required")
		}
		t.Skip("REALK8S_BIN / PODCLAIM_BUILD not set (scripts/realk8s-tests.sh sets them)")
	}
	crds, err := filepath.Abs("../../deploy/crds")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{BinDir: filepath.Dir(self), BuildDir: build, Self: self, Dir: t.TempDir(), CRDs: crds,
		Systems: []string{"podclaim", "podclaimd", "client-go", "client-go-5qps", "unguarded"},
		Pools:   []int{20}, Conc: []int{1, 5}, Window: 2 * time.Second, Drain: 10 * time.Second,
		Hold: 100 * time.Millisecond, Burst: 20, Sustained: 3 * time.Second, Probe: 2 * time.Second,
		Rates: []float64{5, 20}, P99Limit: 100 * time.Millisecond, Log: testWriter{t}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.print(&out, cfg)
	t.Log(out.String())
	if err := rep.smokeCheck(cfg); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func TestSmokeCheckCatchesBrokenInvariants(t *testing.T) {
	good := func(sys string, ok, total, conflicts int) *cell {
		return &cell{System: sys, Pool: 20, Conc: 5, OK: ok, Writes: writes{Total: total, Conflicts: conflicts}}
	}
	for _, tc := range []struct {
		name    string
		cells   []*cell
		wantErr string
	}{
		{"clean", []*cell{good("podclaim", 10, 12, 2), good("client-go", 10, 31, 1), good("unguarded", 10, 10, 0)}, ""},
		{"podclaim double claim", []*cell{{System: "podclaim", OK: 10, Doubles: 1, Writes: writes{Total: 10}}}, "double claims"},
		{"unguarded doubles are its nature", []*cell{{System: "unguarded", OK: 10, Doubles: 3, Writes: writes{Total: 10}}}, ""},
		{"podclaim writing twice", []*cell{good("podclaim", 10, 20, 0)}, "one won write per claim"},
		{"client-go skipping the status", []*cell{good("client-go", 10, 20, 0)}, "want 3 each"},
		{"nothing claimed", []*cell{good("podclaimd", 0, 0, 0)}, "no claim answered"},
	} {
		r := &report{Closed: tc.cells}
		err := r.smokeCheck(Config{})
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestResultsJSONHoldsCensoredLatencies(t *testing.T) {
	b, err := json.Marshal(&cell{Latency: dist{0.5, math.Inf(1)}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"Latency":[0.5,-1]`) {
		t.Errorf("got %s, want the unanswered claim as -1", b)
	}
}
