package peers

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// dist is a latency distribution in seconds; +Inf marks a claim that got no answer before the
// cell ended (censored: it counts as slower than anything measured).
type dist []float64

// MarshalJSON writes a censored value (+Inf, which JSON cannot hold) as -1.
func (d dist) MarshalJSON() ([]byte, error) {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = v
		if math.IsInf(v, 0) || math.IsNaN(v) {
			out[i] = -1
		}
	}
	return json.Marshal(out)
}

func (d dist) sorted() dist {
	c := append(dist(nil), d...)
	sort.Float64s(c)
	return c
}

// q is the nearest-rank quantile (0 < p <= 1) of a sorted dist; NaN when empty.
func (d dist) q(p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

func seconds(t time.Duration) float64 { return t.Seconds() }

// fmtMs prints seconds as milliseconds with 3 significant digits, "-" for NaN and ">Ns" for a
// censored value.
func fmtMs(s float64, cap time.Duration) string {
	switch {
	case math.IsNaN(s):
		return "-"
	case math.IsInf(s, 1):
		return fmt.Sprintf(">%.0fs", cap.Seconds())
	case s < 0.01:
		return fmt.Sprintf("%.2f", s*1e3)
	case s < 0.1:
		return fmt.Sprintf("%.1f", s*1e3)
	default:
		return fmt.Sprintf("%.0f", s*1e3)
	}
}

// fmtNum prints a figure with 3 significant digits.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == 0:
		return "0"
	case math.Abs(v) < 1:
		return fmt.Sprintf("%.3f", v)
	case math.Abs(v) < 10:
		return fmt.Sprintf("%.2f", v)
	case math.Abs(v) < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// ratio of a system's figure to podclaim's, "" when either is not a finite positive number.
func ratio(v, base float64) string {
	if math.IsNaN(v) || math.IsNaN(base) || base <= 0 || math.IsInf(base, 0) {
		return ""
	}
	if math.IsInf(v, 1) {
		return " (inf)"
	}
	r := v / base
	switch {
	case r >= 100:
		return fmt.Sprintf(" (%.0fx)", r)
	case r >= 10:
		return fmt.Sprintf(" (%.1fx)", r)
	default:
		return fmt.Sprintf(" (%.2fx)", r)
	}
}
