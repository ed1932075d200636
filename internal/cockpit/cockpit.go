// Package cockpit owns the operator's view of a whole cluster: it reads
// every agent's /status, judges the cluster's health, and shows it as one
// screen (or JSON) for `moha status`, and as the status page each agent
// serves at / (HTML and SVG drawn by an embedded script).
package cockpit

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moha-project/moha/internal/status"
)

// Node is what one agent answered, or why it did not.
type Node struct {
	Name   string         `json:"name"`
	HTTP   string         `json:"http"`
	Status *status.Status `json:"status,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// View is the cluster as the agents report it.
type View struct {
	At       time.Time `json:"at"`
	Nodes    []Node    `json:"nodes"`
	Problems []string  `json:"problems"` // empty: healthy
	// Rates is, per node, the messages a second it sent its peers since an
	// earlier view (SetRates); nil with no earlier view.
	Rates map[string]float64 `json:"rates,omitempty"`
}

// SetRates fills Rates from the messages each node sent since prev.
func (v *View) SetRates(prev *View) {
	if prev == nil || !v.At.After(prev.At) {
		return
	}
	dt := v.At.Sub(prev.At).Seconds()
	v.Rates = map[string]float64{}
	for _, n := range v.Nodes {
		i := slices.IndexFunc(prev.Nodes, func(p Node) bool { return p.Name == n.Name })
		if n.Status == nil || i < 0 || prev.Nodes[i].Status == nil {
			continue
		}
		if d := sentTotal(n.Status) - sentTotal(prev.Nodes[i].Status); d >= 0 {
			v.Rates[n.Name] = float64(d) / dt
		}
	}
}

func sentTotal(st *status.Status) int64 {
	var n uint64
	for _, p := range st.Peers {
		n += p.SentMessages
	}
	return int64(n)
}

// Healthy reports whether nothing is wrong.
func (v *View) Healthy() bool { return len(v.Problems) == 0 }

// Source names the agents to read: their names and HTTP addresses, and the
// status token (sent as a bearer token; loopback needs none).
type Source struct {
	Agents map[string]string // node name -> HTTP host:port
	Token  string
	// Local, when set, answers for its node without HTTP (an agent serving
	// the status page reads itself directly).
	Local map[string]func() status.Status
}

// Read fetches every agent's /status (at most timeout each, in parallel)
// and judges the result.
func Read(ctx context.Context, src Source, timeout time.Duration) *View {
	names := make([]string, 0, len(src.Agents))
	for n := range src.Agents {
		names = append(names, n)
	}
	sort.Strings(names)
	v := &View{At: time.Now(), Nodes: make([]Node, len(names))}
	done := make(chan struct{}, len(names))
	for i, name := range names {
		go func() {
			defer func() { done <- struct{}{} }()
			if local := src.Local[name]; local != nil {
				st := local()
				v.Nodes[i] = Node{Name: name, HTTP: src.Agents[name], Status: &st}
				return
			}
			v.Nodes[i] = fetch(ctx, name, src.Agents[name], src.Token, timeout)
		}()
	}
	for range names {
		<-done
	}
	v.Problems = judge(v.Nodes)
	return v
}

// Discover returns the agents a cluster is made of, from one agent's
// /status: itself and its peers' HTTP addresses.
func Discover(ctx context.Context, url, token string, timeout time.Duration) (Source, error) {
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"), "/")
	n := fetch(ctx, "", addr, token, timeout)
	if n.Status == nil {
		return Source{}, fmt.Errorf("read %s: %s", url, n.Error)
	}
	src := Source{Agents: map[string]string{n.Status.Node: addr}, Token: token}
	for _, p := range n.Status.Peers {
		if p.HTTP == "" {
			return Source{}, fmt.Errorf("%s does not say where its peer %s answers (an agent older than moha status)", url, p.Name)
		}
		src.Agents[p.Name] = p.HTTP
	}
	return src, nil
}

func fetch(ctx context.Context, name, addr, token string, timeout time.Duration) Node {
	n := Node{Name: name, HTTP: addr}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		n.Error = err.Error()
		return n
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.Error = "unreachable: " + err.Error()
		return n
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		n.Error = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		return n
	}
	var st status.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		n.Error = "unreadable /status: " + err.Error()
		return n
	}
	n.Status = &st
	if n.Name == "" {
		n.Name = st.Node
	}
	return n
}

// judge lists what is wrong, one line each.
func judge(nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		st := n.Status
		switch {
		case st == nil:
			out = append(out, fmt.Sprintf("%s: %s", n.Name, n.Error))
			continue
		case !st.Ready:
			out = append(out, fmt.Sprintf("%s: not ready: %s", n.Name, st.ReadyReason))
		case st.Degraded:
			out = append(out, fmt.Sprintf("%s: interest degraded (it draws every message): %s", n.Name, st.DegradedReason))
		}
		for _, p := range st.Peers {
			switch {
			case !p.Up:
				out = append(out, fmt.Sprintf("%s: link to %s down since %s", n.Name, p.Name, p.Since.Format(time.RFC3339)))
			case p.Stalled:
				out = append(out, fmt.Sprintf("%s: %s acknowledges nothing (stalled)", n.Name, p.Name))
			case p.BrokerDown:
				out = append(out, fmt.Sprintf("%s: %s reports its broker down", n.Name, p.Name))
			}
		}
	}
	return out
}

// WriteText writes the view as one screen.
func (v *View) WriteText(w io.Writer) error {
	ready := 0
	for _, n := range v.Nodes {
		if n.Status != nil && n.Status.Ready {
			ready++
		}
	}
	fmt.Fprintf(w, "moha cluster: %d nodes, %d ready\n\n", len(v.Nodes), ready)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREADY\tINTEREST\tBROKER\tCLIENTS\tFILTERS\tRETAINED\tSENT\tSENT/s\tDROPPED\tVERSION")
	for _, n := range v.Nodes {
		st := n.Status
		if st == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", n.Name)
			continue
		}
		rate := "-"
		if r, ok := v.Rates[n.Name]; ok {
			rate = fmt.Sprintf("%.0f", r)
		}
		var sent, dropped uint64
		for _, p := range st.Peers {
			sent += p.SentMessages
			dropped += p.Dropped
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", n.Name, yesNo(st.Ready), interestState(st), upDown(st.Broker.Up),
			st.Interest.Clients, st.Interest.Filters, st.RetainedTopics, sent, rate, dropped, st.Version.Version)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	v.writeLinks(w)
	if v.Healthy() {
		_, err := fmt.Fprintln(w, "\nhealthy")
		return err
	}
	fmt.Fprintln(w, "\nproblems:")
	for _, p := range v.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

// writeLinks writes the link matrix: row = the node that reports, column =
// its peer.
func (v *View) writeLinks(w io.Writer) {
	names := make([]string, len(v.Nodes))
	for i, n := range v.Nodes {
		names[i] = n.Name
	}
	fmt.Fprintf(w, "\nlinks (row reports column):\n")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "\t%s\n", strings.Join(names, "\t"))
	for _, n := range v.Nodes {
		cells := make([]string, len(names))
		for i, peer := range names {
			cells[i] = linkCell(n, peer)
		}
		fmt.Fprintf(tw, "%s\t%s\n", n.Name, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
}

func linkCell(n Node, peer string) string {
	if n.Name == peer {
		return "-"
	}
	if n.Status == nil {
		return "?"
	}
	i := slices.IndexFunc(n.Status.Peers, func(p status.PeerStatus) bool { return p.Name == peer })
	if i < 0 {
		return "?"
	}
	p := n.Status.Peers[i]
	switch {
	case !p.Up:
		return "DOWN"
	case p.Stalled:
		return "stalled"
	case p.BrokerDown:
		return "broker down"
	case p.Queued > 0:
		return fmt.Sprintf("up (%d queued)", p.Queued)
	}
	return "up"
}

func interestState(st *status.Status) string {
	if st.Degraded {
		return "degraded"
	}
	return "exact"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

func upDown(b bool) string {
	if b {
		return "up"
	}
	return "DOWN"
}

//go:embed page.html
var page []byte

// Page serves the status page: plain HTML, SVG and a script that draws the
// cluster from cluster.json (next to it) every second. No external assets.
func Page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	_, _ = w.Write(page)
}

// ViewHandler serves the cluster's view (View as JSON), read afresh from
// src at each request.
func ViewHandler(src Source) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := Read(r.Context(), src, 2*time.Second)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(v)
	}
}
