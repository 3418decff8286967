package peers

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// report holds every cell of one run.
type report struct {
	Systems   []string
	Started   time.Time
	Finished  time.Time
	Closed    []*cell
	Bursts    []*cell
	Sustained []*sustainedResult
}

type row struct {
	label string
	val   func(sys string) (string, float64) // shown text, figure the ratio is taken on
}

// print writes the one table: a row per figure, a column per system, each figure beside its
// ratio to the first system's (podclaim's).
func (r *report) print(w io.Writer, cfg Config) {
	base := r.Systems[0]
	fmt.Fprintf(w, "\npeers: claiming warm pods on kube-apiserver v1.34.4 + etcd v3.6.4, one run %s .. %s\n",
		r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04"))
	fmt.Fprintf(w, "(ratio to %s in brackets; latencies in ms, claim -> pod usable; closed loops of %s, recycled %s after each claim)\n\n",
		base, cfg.Window, cfg.Hold)
	var rows []row
	sect := func(s string) { rows = append(rows, row{label: s}) }
	for _, n := range cfg.Pools {
		sect(fmt.Sprintf("pool of %d warm pods", n))
		rows = append(rows, row{"  claims/s at saturation (best of the loops)", func(sys string) (string, float64) {
			best := math.NaN()
			for _, c := range r.closed(sys, n, 0) {
				if math.IsNaN(best) || c.ClaimsPerSec > best {
					best = c.ClaimsPerSec
				}
			}
			return fmtNum(best), best
		}})
		for _, k := range cfg.Conc {
			rows = append(rows, row{fmt.Sprintf("  %d claimers: p50 / p99 / max", k), func(sys string) (string, float64) {
				cs := r.closed(sys, n, k)
				if len(cs) == 0 {
					return "-", math.NaN()
				}
				l := cs[0].Latency
				p99 := l.q(0.99)
				return fmt.Sprintf("%s / %s / %s", fmtMs(l.q(0.5), cfg.Window+cfg.Drain), fmtMs(p99, cfg.Window+cfg.Drain),
					fmtMs(l.q(1), cfg.Window+cfg.Drain)), p99
			}})
		}
		rows = append(rows,
			row{"  API writes per claim (audit log)", func(sys string) (string, float64) {
				v := r.sum(sys, n, func(c *cell) float64 { return float64(c.Writes.Total) })
				return fmtNum(v), v
			}},
			row{"  of which 409 Conflict", func(sys string) (string, float64) {
				v := r.sum(sys, n, func(c *cell) float64 { return float64(c.Writes.Conflicts) })
				return fmtNum(v), math.NaN()
			}},
			row{"  double claims (idle periods won twice)", func(sys string) (string, float64) {
				d := 0
				for _, c := range r.closed(sys, n, 0) {
					d += c.Doubles
				}
				if len(r.closed(sys, n, 0)) == 0 {
					return "-", math.NaN()
				}
				return fmt.Sprint(d), math.NaN()
			}},
			row{"  claimer CPU s per 1,000 claims", func(sys string) (string, float64) {
				v := r.sum(sys, n, func(c *cell) float64 { return c.CPUSeconds * 1000 })
				return fmtNum(v), v
			}},
			row{"  claims failed / unanswered", func(sys string) (string, float64) {
				f, u := 0, 0
				for _, c := range r.closed(sys, n, 0) {
					f += c.Failed
					u += c.Unanswered
				}
				return fmt.Sprintf("%d / %d", f, u), math.NaN()
			}})
	}
	if len(r.Bursts) > 0 {
		b := r.Bursts[0].Pool
		sect(fmt.Sprintf("burst (the peer's claims-warm): %d warm Ready pods, %d claims at once", b, b))
		pick := func(sys string) *cell {
			for _, c := range r.Bursts {
				if c.System == sys {
					return c
				}
			}
			return nil
		}
		rows = append(rows,
			row{"  create-ack p50 / p95 / p99", func(sys string) (string, float64) {
				c := pick(sys)
				if c == nil {
					return "-", math.NaN()
				}
				return fmt.Sprintf("%s / %s / %s", fmtMs(c.Ack.q(0.5), 0), fmtMs(c.Ack.q(0.95), 0), fmtMs(c.Ack.q(0.99), 0)), c.Ack.q(0.99)
			}},
			row{"  claim -> usable p50 / p95 / p99", func(sys string) (string, float64) {
				c := pick(sys)
				if c == nil {
					return "-", math.NaN()
				}
				cap := 2 * time.Minute
				return fmt.Sprintf("%s / %s / %s", fmtMs(c.Latency.q(0.5), cap), fmtMs(c.Latency.q(0.95), cap), fmtMs(c.Latency.q(0.99), cap)), c.Latency.q(0.99)
			}},
			row{"  all served (ms)", func(sys string) (string, float64) {
				c := pick(sys)
				if c == nil || c.AllServed == 0 {
					return "-", math.NaN()
				}
				return fmtMs(c.AllServed.Seconds(), 0), c.AllServed.Seconds()
			}},
			row{"  claims served / failed / unanswered", func(sys string) (string, float64) {
				c := pick(sys)
				if c == nil {
					return "-", math.NaN()
				}
				return fmt.Sprintf("%d / %d / %d", c.OK, c.Failed, c.Unanswered), math.NaN()
			}},
			row{"  API writes per claim / double claims", func(sys string) (string, float64) {
				c := pick(sys)
				if c == nil {
					return "-", math.NaN()
				}
				return fmt.Sprintf("%s / %d", fmtNum(c.writesPerClaim()), c.Doubles), c.writesPerClaim()
			}})
	}
	if len(r.Sustained) > 0 {
		sect(fmt.Sprintf("sustained: offered rate for %s on the pool of %d, recycled %s after each claim",
			cfg.Sustained, cfg.Pools[len(cfg.Pools)-1], cfg.Hold))
		rows = append(rows,
			row{fmt.Sprintf("  highest rate with p99 < %s (claims/s)", cfg.P99Limit), func(sys string) (string, float64) {
				for _, s := range r.Sustained {
					if s.System == sys {
						if s.Best == nil {
							return "none", 0
						}
						return fmtNum(s.Best.Rate), s.Best.Rate
					}
				}
				return "-", math.NaN()
			}},
			row{"  at that rate: p50 / p99 / max", func(sys string) (string, float64) {
				for _, s := range r.Sustained {
					if s.System == sys && s.Best != nil {
						l := s.Best.Latency
						return fmt.Sprintf("%s / %s / %s", fmtMs(l.q(0.5), 0), fmtMs(l.q(0.99), 0), fmtMs(l.q(1), 0)), math.NaN()
					}
				}
				return "-", math.NaN()
			}},
			row{"  next rate up (probe): p99", func(sys string) (string, float64) {
				for _, s := range r.Sustained {
					if s.System == sys && len(s.Probes) > 0 {
						last := s.Probes[len(s.Probes)-1]
						if !s.passesShown(cfg, last) {
							return fmt.Sprintf("%s/s: %s", fmtNum(last.Rate), fmtMs(last.Latency.q(0.99), cfg.Probe+cfg.Drain)), math.NaN()
						}
						return "all passed", math.NaN()
					}
				}
				return "-", math.NaN()
			}})
	}

	width := 44
	cols := make([]int, len(r.Systems))
	cells := make([][]string, len(rows))
	for i, rw := range rows {
		if rw.val == nil {
			continue
		}
		_, bv := rw.val(base)
		cells[i] = make([]string, len(r.Systems))
		for j, sys := range r.Systems {
			t, v := rw.val(sys)
			if j > 0 {
				t += ratio(v, bv)
			}
			cells[i][j] = t
			cols[j] = max(cols[j], len(t), len(sys))
		}
	}
	fmt.Fprintf(w, "%-*s", width, "")
	for j, sys := range r.Systems {
		fmt.Fprintf(w, "  %*s", cols[j], sys)
	}
	fmt.Fprintln(w)
	for i, rw := range rows {
		if rw.val == nil {
			fmt.Fprintln(w, rw.label)
			continue
		}
		fmt.Fprintf(w, "%-*s", width, rw.label)
		for j := range r.Systems {
			fmt.Fprintf(w, "  %*s", cols[j], cells[i][j])
		}
		fmt.Fprintln(w)
	}
	for _, c := range append(append([]*cell(nil), r.Closed...), r.Bursts...) {
		if len(c.FailReasons) > 0 {
			var rs []string
			for k, v := range c.FailReasons {
				rs = append(rs, fmt.Sprintf("%s x%d", k, v))
			}
			fmt.Fprintf(w, "note: %s pool %d conc %d failures: %s\n", c.System, c.Pool, c.Conc, strings.Join(rs, ", "))
		}
	}
}

func (s *sustainedResult) passesShown(cfg Config, c *cell) bool {
	return c.Failed == 0 && c.Unanswered == 0 && c.OK > 0 && c.Latency.q(0.99) < cfg.P99Limit.Seconds() && c.Doubles == 0
}

// closed returns the closed-loop cells of sys on pool n (conc 0 = every concurrency).
func (r *report) closed(sys string, n, conc int) []*cell {
	var out []*cell
	for _, c := range r.Closed {
		if c.System == sys && c.Pool == n && (conc == 0 || c.Conc == conc) {
			out = append(out, c)
		}
	}
	return out
}

// sum of f over the closed cells of sys on pool n, per answered claim.
func (r *report) sum(sys string, n int, f func(*cell) float64) float64 {
	var v float64
	ok := 0
	for _, c := range r.closed(sys, n, 0) {
		v += f(c)
		ok += c.OK
	}
	if ok == 0 {
		return math.NaN()
	}
	return v / float64(ok)
}

// smokeCheck: what the smoke run in the real-server suite holds every system to. A system that
// claims nothing, a double claim by a guarded system, or podclaim writing more than once per
// claim fails it.
func (r *report) smokeCheck(cfg Config) error {
	var errs []error
	for _, c := range append(append([]*cell(nil), r.Closed...), r.Bursts...) {
		if c.OK == 0 {
			errs = append(errs, fmt.Errorf("%s, pool %d, %d claimers: no claim answered (%v)", c.System, c.Pool, c.Conc, c.FailReasons))
		}
		if c.System != "unguarded" && c.Doubles > 0 {
			errs = append(errs, fmt.Errorf("%s, pool %d, %d claimers: %d double claims", c.System, c.Pool, c.Conc, c.Doubles))
		}
		if (c.System == "podclaim" || c.System == "podclaimd") && c.OK > 0 &&
			(c.Writes.Total < c.OK || c.Writes.Total-c.Writes.Conflicts != c.OK) {
			errs = append(errs, fmt.Errorf("%s, pool %d, %d claimers: %d writes (%d conflicts) for %d claims, want one won write per claim",
				c.System, c.Pool, c.Conc, c.Writes.Total, c.Writes.Conflicts, c.OK))
		}
		if c.System == "client-go" && c.OK > 0 && c.Writes.Total-c.Writes.Conflicts != 3*c.OK {
			errs = append(errs, fmt.Errorf("client-go, pool %d, %d claimers: %d won writes for %d claims, want 3 each (claim object, pod, status)",
				c.Pool, c.Conc, c.Writes.Total-c.Writes.Conflicts, c.OK))
		}
	}
	for _, c := range r.Bursts {
		if c.OK != c.Pool {
			errs = append(errs, fmt.Errorf("%s burst: %d of %d claims served", c.System, c.OK, c.Pool))
		}
	}
	for _, s := range r.Sustained {
		if len(s.Probes) == 0 {
			errs = append(errs, fmt.Errorf("%s: no sustained run", s.System))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("peers smoke run: %w", errors.Join(errs...))
	}
	fmt.Println("peers smoke run: every invariant held")
	return nil
}
