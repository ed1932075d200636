package agent

import (
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moha-project/moha/internal/buildinfo"
	"github.com/moha-project/moha/internal/cluster"
	"github.com/moha-project/moha/internal/interest"
)

// Handler returns the agent's HTTP handler (what its listener serves), for
// tests that call it with a chosen remote address.
func (a *Agent) Handler() http.Handler { return a.handler() }

// handler serves /healthz, /readyz, /metrics and /status. /healthz,
// /readyz and /metrics are open (the load balancers and Prometheus read
// them; they name no client and no topic); /status and /debug/pprof show
// client ids, filters and log text, and want loopback or the status token
// (private).
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", a.private(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Status())
	}))
	if a.pprof {
		mux.HandleFunc("/debug/pprof/", a.private(pprof.Index))
		mux.HandleFunc("/debug/pprof/profile", a.private(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", a.private(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", a.private(pprof.Trace))
	}
	return mux
}

// private serves h to loopback clients, and to others that present the
// cluster file's status_token as a bearer token. A refusal is counted as a
// security event (kind "status_refused").
func (a *Agent) private(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if fromLoopback(r) || a.validToken(r) {
			h(w, r)
			return
		}
		a.securityEvent("status_refused", "refused /status or /debug/pprof without the status token", "remote", r.RemoteAddr)
		if a.cluster.StatusToken == "" {
			http.Error(w, "forbidden: /status is served on loopback only; set status_token in the cluster file to read it from elsewhere", http.StatusForbidden)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="moha"`)
		http.Error(w, "unauthorized: send Authorization: Bearer <status_token>", http.StatusUnauthorized)
	}
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (a *Agent) validToken(r *http.Request) bool {
	want := a.cluster.StatusToken
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// Status is the agent's state as /status reports it.
type Status struct {
	Version        buildinfo.Info `json:"version"`
	Node           string         `json:"node"`
	Ready          bool           `json:"ready"`
	ReadyReason    string         `json:"ready_reason"`
	Degraded       bool           `json:"degraded"`
	DegradedReason string         `json:"degraded_reason,omitempty"`
	Broker         BrokerStatus   `json:"broker"`
	Data           DataStatus     `json:"data_session"`
	Interest       interest.Stats `json:"interest"`
	Advertised     []string       `json:"advertised"`
	Peers          []PeerStatus   `json:"peers"`
	ForwardQueue   int            `json:"forward_queue"`
	InboundPending int            `json:"inbound_pending"`
	Shared         SharedStatus   `json:"shared_subscriptions"`
	RetainedTopics int            `json:"retained_topics"` // topics the broker holds a retained message on, as the agent knows
	Uptime         string         `json:"uptime"`
	Runtime        RuntimeStatus  `json:"runtime"`
}

// SharedStatus shows how shared subscription groups are spread.
type SharedStatus struct {
	Mode string `json:"mode"` // spread or prefer_local
	// Memberships are the groups the agent's own share sessions are members
	// of on the local broker, one entry per membership (one per member node
	// elsewhere), sorted.
	Memberships []string `json:"memberships"`
	// EchoesPending: republished messages an own membership may still take back.
	EchoesPending int `json:"echoes_pending"`
}

// RuntimeStatus is how the Go runtime runs the agent: the settings moha
// tunes for a forwarding agent (see 'moha agent --help').
type RuntimeStatus struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	GODEBUG    string `json:"godebug"`
	// SchedPolicy is the Linux scheduling policy of the agent's threads
	// ('moha agent --sched'), as the kernel reports it.
	SchedPolicy string `json:"sched_policy"`
}

// BrokerStatus describes the sessions with the local broker.
type BrokerStatus struct {
	Address string `json:"address"`
	Up      bool   `json:"up"`
	Error   string `json:"error,omitempty"`
	// QueueOverflows counts the times the broker logged that it drops
	// messages queued for one of the agent's sessions (lost messages).
	QueueOverflows uint64 `json:"queue_overflows"`
	// DroppedMessages is the broker's own count of messages it dropped
	// for full queues, all clients together.
	DroppedMessages uint64 `json:"dropped_messages"`
}

// DataStatus describes the data session: what it subscribes to on the
// local broker follows the peers' interest.
type DataStatus struct {
	ClientID string `json:"client_id,omitempty"`
	Filters  int    `json:"filters"`
	// Current: every interest change seen so far is applied to the
	// session's subscriptions (messages matching it reach the agent).
	Current bool `json:"current"`
}

// PeerStatus is one peer as this agent sees it.
type PeerStatus struct {
	cluster.PeerStatus
	HTTP            string   `json:"http"` // the peer agent's HTTP address, as configured (moha status reads it)
	InterestFilters int      `json:"interest_filters"`
	Interest        []string `json:"interest,omitempty"`
}

// Status returns a snapshot of the agent's state.
func (a *Agent) Status() Status {
	ready, why := a.Ready()
	degraded, reason := a.table.Degraded()
	a.mu.Lock()
	brokerErr := a.brokerOK
	a.mu.Unlock()
	s := Status{
		Version: buildinfo.Get(),
		Node:    a.node.Name, Ready: ready, ReadyReason: why,
		Degraded: degraded, DegradedReason: reason,
		Broker: BrokerStatus{Address: a.node.Broker.Address, Up: a.sessionUp.Load(), Error: brokerErr,
			QueueOverflows: a.drops.overflows.Load(), DroppedMessages: a.drops.dropped.Load()},
		Data:           a.dataStatus(),
		Interest:       a.table.Stats(),
		Advertised:     limit(a.table.Advertised(), 100),
		ForwardQueue:   a.forwarder.Pending(),
		InboundPending: a.republisher.Pending(),
		Shared:         a.shares.status(a.cluster.SharedSubscriptions),
		RetainedTopics: a.retained.count(),
		Uptime:         time.Since(a.started).Round(time.Second).String(),
		Runtime:        RuntimeStatus{GOMAXPROCS: runtime.GOMAXPROCS(0), GODEBUG: os.Getenv("GODEBUG"), SchedPolicy: threadPolicies()},
	}
	for _, p := range a.mesh.Status() {
		var httpAddr string
		if n, err := a.cluster.Node(p.Name); err == nil {
			httpAddr = n.HTTP
		}
		s.Peers = append(s.Peers, PeerStatus{
			PeerStatus:      p,
			HTTP:            httpAddr,
			InterestFilters: a.router.Filters(p.Name),
			Interest:        limit(a.router.FilterList(p.Name), 100),
		})
	}
	return s
}

func (a *Agent) dataStatus() DataStatus {
	d := DataStatus{Filters: int(a.dataFilters.Load()), Current: a.dataCurrent()}
	if id := a.dataID.Load(); id != nil {
		d.ClientID = *id
	}
	return d
}

// limit keeps /status readable for nodes with many filters.
func limit(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
