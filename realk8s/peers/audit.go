package peers

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// writes counts the write requests (create, update, patch, delete) of one user at the server,
// from kube-apiserver's audit log (cluster.Config.AuditLog: Metadata level, write verbs only).
type writes struct {
	Total     int            // every write request that completed, whatever its answer
	Conflicts int            // of which 409
	ByVerb    map[string]int // "patch pods", "update sandboxclaims/status", ...
}

// auditLog reads the audit log from where the last mark was.
type auditLog struct {
	path string
}

// mark returns the log's current end: a cell's writes are the lines after it.
func (a *auditLog) mark() (int64, error) {
	st, err := os.Stat(a.path)
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	return st.Size(), nil
}

type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// count returns user's writes logged after offset `from`.
func (a *auditLog) count(from int64, user string) (writes, error) {
	w := writes{ByVerb: map[string]int{}}
	f, err := os.Open(a.path)
	if err != nil {
		return w, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < from {
		return w, fmt.Errorf("audit log %s: shorter than the cell's mark (rotated?)", a.path)
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return w, fmt.Errorf("audit log: %w", err)
	}
	return w, countEvents(f, user, &w)
}

func countEvents(r io.Reader, user string, w *writes) error {
	br := bufio.NewReaderSize(r, 1<<20)
	quoted := strconv.Quote(user)
	for {
		line, err := br.ReadBytes('\n')
		// a line still being written (no newline yet) is left for the next count
		if len(line) > 0 && line[len(line)-1] == '\n' && strings.Contains(string(line), quoted) {
			var ev auditEvent
			if jerr := json.Unmarshal(line, &ev); jerr == nil && ev.User.Username == user &&
				(ev.Stage == "ResponseComplete" || ev.Stage == "Panic") {
				w.Total++
				if ev.ResponseStatus.Code == 409 {
					w.Conflicts++
				}
				k := ev.Verb + " " + ev.ObjectRef.Resource
				if ev.ObjectRef.Subresource != "" {
					k += "/" + ev.ObjectRef.Subresource
				}
				w.ByVerb[k]++
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// settle waits until the log stops growing for a moment (the last responses of a cell have
// been logged: blocking mode writes each line before its response, so this is brief).
func (a *auditLog) settle(limit time.Duration) {
	last := int64(-1)
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		n, err := a.mark()
		if err != nil || n == last {
			return
		}
		last = n
		time.Sleep(100 * time.Millisecond)
	}
}
