package agent

import (
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moha-project/moha/internal/buildinfo"
	"github.com/moha-project/moha/internal/cockpit"
	"github.com/moha-project/moha/internal/runtimetune"
	"github.com/moha-project/moha/internal/status"
)

// Handler returns the agent's HTTP handler (what its listener serves), for
// tests that call it with a chosen remote address.
func (a *Agent) Handler() http.Handler { return a.handler() }

// handler serves /healthz, /readyz, /metrics, /status, the status page
// (/) and its data (/cluster.json). /healthz, /readyz and /metrics are open
// (the load balancers and Prometheus read them; they name no client and no
// topic); the others show client ids, filters and log text, and want
// loopback or the status token (private).
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
	mux.HandleFunc("GET /{$}", a.private(cockpit.Page))
	mux.HandleFunc("GET /cluster.json", a.private(cockpit.ViewHandler(a.cockpitSource())))
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

// cockpitSource is where the status page reads the cluster: this agent
// directly, the others at their configured HTTP addresses with the status
// token.
func (a *Agent) cockpitSource() cockpit.Source {
	src := cockpit.Source{Agents: map[string]string{}, Token: a.cluster.StatusToken,
		Local: map[string]func() status.Status{a.node.Name: a.Status}}
	for _, n := range a.cluster.Nodes {
		src.Agents[n.Name] = n.HTTP
	}
	return src
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
		a.security.event("status_refused", "refused /status or /debug/pprof without the status token", "remote", r.RemoteAddr)
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

// Status returns a snapshot of the agent's state.
func (a *Agent) Status() status.Status {
	ready, why := a.Ready()
	degraded, reason := a.table.Degraded()
	a.mu.Lock()
	brokerErr := a.brokerErr
	a.mu.Unlock()
	s := status.Status{
		Version: buildinfo.Get(),
		Node:    a.node.Name, Ready: ready, ReadyReason: why,
		Degraded: degraded, DegradedReason: reason,
		Broker: status.BrokerStatus{Address: a.node.Broker.Address, Up: a.sessionUp.Load(), Error: brokerErr,
			QueueOverflows: a.brokerLog.drops.overflows.Load(), DroppedMessages: a.brokerLog.drops.dropped.Load()},
		Data:           a.dataFilters.status(a.sessionUp.Load()),
		Interest:       a.table.Stats(),
		Advertised:     a.table.SomeAdvertised(statusListed),
		ForwardQueue:   a.forwarder.Pending(),
		InboundPending: a.republisher.Pending(),
		Shared:         a.shares.status(a.cluster.SharedSubscriptions),
		Replication:    a.replicas.status(),
		RetainedTopics: a.retained.Count(),
		Uptime:         time.Since(a.started).Round(time.Second).String(),
		Runtime:        runtimetune.Report(),
	}
	for _, p := range a.mesh.Status() {
		var httpAddr string
		if n, err := a.cluster.Node(p.Name); err == nil {
			httpAddr = n.HTTP
		}
		s.Peers = append(s.Peers, status.PeerStatus{
			PeerStatus:      p,
			HTTP:            httpAddr,
			InterestFilters: a.router.Filters(p.Name),
			Interest:        a.router.SomeFilters(p.Name, statusListed),
		})
	}
	return s
}

// statusListed is how many filters /status lists per set: a sample that
// keeps it readable, and cheap for nodes with a million filters.
const statusListed = 100
