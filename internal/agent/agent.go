// Package agent wires one moha agent: the two sessions with the local broker
// (data and log), the interest table fed by the broker's log lines, the mesh
// of links to peer agents, the forwarding loop, the republishing of peers'
// messages into the local broker, and the HTTP endpoints. The Agent struct
// lists the pieces and connects their callbacks, owns the goroutines that run
// them, and keeps the broker sessions up (connect, drain, reconnect:
// broker.go, datasession.go). Each piece lives in its own package or, where
// it works through the broker sessions, in a type of its own here: the data
// session's filters (dataFilters), the retained scans (retainedScans), what
// the log session carries besides interest (brokerLog), the security log
// (securityLog), the share sessions (shares), session replicas (replicas) and
// the republisher.
package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/retained"
	"github.com/moha-project/moha/internal/takeover"
)

// Options configure one agent. Cluster and Node are required.
type Options struct {
	Cluster *config.Cluster
	Node    string
	Logger  *slog.Logger
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP address.
	// Off by default: it exposes internals to whoever reaches that port.
	Pprof bool
}

// Agent is one running agent. Create it with New, run it with Run.
type Agent struct {
	node     *config.Node
	cluster  *config.Cluster
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics

	table       *interest.Table
	router      *forward.Router
	forwarder   *forward.Forwarder
	mesh        *mesh.Mesh
	republisher *republisher
	shares      *shares
	replicas    *replicas
	takeovers   *takeover.Tracker
	retained    *retained.Store
	dataFilters *dataFilters
	scans       *retainedScans
	runCtx      context.Context
	kickWG      sync.WaitGroup
	brokerTLS   *tls.Config

	httpLn    net.Listener
	pprof     bool
	sessionUp atomic.Bool
	ids       clientIDs
	dials     ownDials        // local addresses of the agent's own broker connections
	own       map[string]bool // every id in ids (read-only after build)
	brokerLog *brokerLog
	security  *securityLog
	started   time.Time

	mu        sync.Mutex
	brokerErr string // last broker session error, "" while connected
}

// ErrBrokerLogging is returned when the broker does not publish the log
// lines the agent needs: without them interest cannot be known at all.
var ErrBrokerLogging = errors.New("agent: the broker publishes no connect lines on $SYS/broker/log (needs log_dest topic, log_type notice, connection_messages true; see `moha render mosquitto`)")

// New validates the options and builds the agent without starting anything
// but the HTTP listener.
func New(opt Options) (*Agent, error) {
	if opt.Cluster == nil {
		return nil, errors.New("agent: no cluster configuration")
	}
	node, err := opt.Cluster.Node(opt.Node)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	logger := opt.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node", node.Name)
	a := &Agent{node: node, cluster: opt.Cluster, log: logger, started: time.Now(), brokerErr: "not connected yet"}
	if a.brokerTLS, err = brokerTLSConfig(node); err != nil {
		return nil, err
	}
	if err := a.build(); err != nil {
		return nil, err
	}
	a.pprof = opt.Pprof
	if a.httpLn, err = net.Listen("tcp", node.HTTP); err != nil {
		return nil, fmt.Errorf("agent: listen http %s: %w", node.HTTP, err)
	}
	return a, nil
}

// build creates the pieces and connects their callbacks.
func (a *Agent) build() error {
	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = newMetrics(a.registry)
	a.security = newSecurityLog(a.log, a.metrics.securityEvents)

	secret, err := a.cluster.SecretBytes()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.ids = newClientIDs(secret, a.node.Name)
	peers := map[string]string{}
	for _, n := range a.cluster.Nodes {
		if n.Name != a.node.Name {
			peers[n.Name] = n.Link
		}
	}
	serverTLS, clientTLS, err := linkTLSConfig(a.cluster)
	if err != nil {
		return err
	}
	peerNames := slices.Sorted(maps.Keys(peers))
	a.router = forward.NewRouter(peerNames, !a.cluster.SubscribesAll())
	slots := 0
	if a.cluster.SpreadsShared() {
		slots = len(peerNames)
	}
	a.shares = newShares(a, peerNames, slots)
	a.replicas = newReplicas(a, a.cluster.NodeNames())
	a.republisher = newRepublisher(a.log, a.metrics)
	a.takeovers = takeover.New()
	a.retained = retained.NewStore()
	a.republisher.superseded = a.retained.Superseded
	a.dataFilters = newDataFilters(a.cluster.SubscribesAll(), a.router, a.retained, a.log, a.registry)
	if !a.cluster.SubscribesAll() {
		a.retained.OnTopics = a.dataFilters.notify // each retained topic is a data subscription
	}
	a.runCtx = context.Background()
	a.mesh, err = mesh.New(mesh.Config{
		Node:           a.node.Name,
		Listen:         a.node.Link,
		Peers:          peers,
		Secret:         secret,
		ServerTLS:      serverTLS,
		ClientTLS:      clientTLS,
		Window:         a.cluster.Window,
		BufferMessages: a.cluster.BufferMessages,
		BufferBytes:    int64(a.cluster.BufferBytes),
		InterestGrace:  time.Duration(a.cluster.InterestGrace),
		RecentInterest: a.recentInterest(),
		Compress:       a.cluster.LinkCompression == config.CompressionDeflate,
		Logger:         a.log,
		Registerer:     a.registry,
	}, mesh.Handlers{
		Deliver:   a.deliverFromPeer,
		Interest:  a.peerInterest,
		LinkState: a.linkState,
		Client:    a.peerClient,
		Digest:    a.peerDigest,
		Sessions:  a.replicas.peerSessions,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.mesh.SetBrokerUp(false) // until the broker sessions are up
	a.forwarder = forward.NewForwarder(a.router, a.mesh, a.registry, a.historyLimits())
	a.scans = newRetainedScans(a.sessionConfig(a.scanClientID()), a.cluster.SubscribesAll(), a.retained, a.forwarder.Enqueue, a.metrics.retainedRescans, a.log)
	data := a.dataClientIDs()
	a.own = map[string]bool{}
	for _, id := range a.ownIDs() {
		a.own[id] = true
	}
	a.table = interest.NewTable(a.ownIDs(), a.localInterest)
	a.table.SetSessionHook(a.replicas.sessionsChanged)
	a.brokerLog = newBrokerLog(a.sessionConfig(a.logClientID()), a.table, a.metrics, a.log, a.security, a.scans.countChanged)
	for _, id := range []string{data[0], data[1], a.scanClientID(), a.logClientID()} {
		a.table.TrackOwn(id)
	}
	for _, slot := range a.shares.slots {
		a.table.CountOwnConnection(slot.id)
	}
	a.mesh.Advertise(a.table.Advertised(), nil)
	a.shares.planner.Local(a.table.Advertised(), nil)
	a.metrics.registerInterest(a.registry, a.table, a.router)
	f := promauto.With(a.registry)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_ready",
		Help: "1 while the node takes clients (/readyz answers 200): broker sessions up and, with quorum majority, a majority reached.",
	}, func() float64 { return boolGauge(a.readyNow()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_broker_session_up",
		Help: "1 while the agent's sessions with its broker are up.",
	}, func() float64 { return boolGauge(a.sessionUp.Load()) })
	return nil
}

func (a *Agent) logClientID() string  { return a.ids.log }
func (a *Agent) scanClientID() string { return a.ids.scan }

// localInterest is the table's change callback: peers learn each change.
func (a *Agent) localInterest(added, removed []string) {
	a.router.ApplyLocal(added, removed)
	a.shares.planner.Local(added, removed)
	a.mesh.Advertise(added, removed)
}

// deliverFromPeer is the mesh's Deliver callback. A retained write older
// than the one the local broker holds is delivered to live subscribers but
// not stored: racing retained writes converge (last writer wins).
func (a *Agent) deliverFromPeer(peer string, m message.Message, ack func()) {
	if m.Retain && m.Written != 0 {
		apply, dup := a.retained.ApplyRemote(&m, time.Now())
		switch {
		case dup:
			a.metrics.staleRetained.Inc()
			ack() // the same write arrived from another peer: already delivered
			return
		case !apply:
			m.Retain = false
			a.metrics.staleRetained.Inc()
		default:
			topic, stamp, peerAck := m.Topic, m.Written, ack
			ack = func() {
				a.retained.Settled(topic, stamp)
				peerAck()
			}
		}
	}
	a.shares.fromPeer(&m)
	a.republisher.deliver(peer, m, ack)
}

// sendDigest sends peer the digest of the local retained messages once the
// first scan of the broker is done (a digest before it would make the peer
// re-send what the broker already has).
func (a *Agent) sendDigest(peer string) {
	if a.scans.waitFirst(a.runCtx) {
		a.mesh.SendDigest(peer, a.retained.Digest())
	}
}

// retainedSyncStall bounds the wait for room while a peer takes nothing of
// a retained sync.
const retainedSyncStall = 30 * time.Second

// peerDigest answers a peer's digest with the retained messages it lacks,
// as a bulk transfer: live messages go first. It stops when the link goes
// down (the next link's digest says what is still missing) or when the
// peer takes nothing for retainedSyncStall.
func (a *Agent) peerDigest(peer string, entries []retained.DigestEntry) {
	a.kickWG.Go(func() {
		missing := a.retained.MissingAt(entries)
		for _, topic := range missing {
			m, ok := a.retained.Current(topic)
			if !ok {
				continue // pruned meanwhile: an old deletion the peer never needs
			}
			ctx, cancel := context.WithTimeout(a.runCtx, retainedSyncStall)
			err := a.mesh.SendWait(ctx, peer, m, nil)
			cancel()
			if err != nil {
				a.log.Warn("retained sync to peer stopped", "peer", peer, "err", err)
				return
			}
		}
		a.metrics.retainedSynced.WithLabelValues(peer).Add(float64(len(missing)))
		if len(missing) > 0 {
			a.log.Info("sent a peer the retained messages it lacked", "peer", peer, "messages", len(missing))
		}
	})
}

// recentInterest is how far back a snapshot of this node's interest sends
// its changes as deltas: as far as the peers' replay history reaches (the
// same cluster file), so that a subscription made here while a link was
// down is replayed there like one made while it was up. None without a
// history (data_subscription interest).
func (a *Agent) recentInterest() time.Duration {
	h := a.historyLimits()
	if h.Window <= 0 {
		return 0
	}
	return h.Window + h.Margin
}

// historyLimits is the forwarder's replay history: on while the data
// session subscribes to every message (data_subscription all).
func (a *Agent) historyLimits() forward.HistoryLimits {
	if !a.cluster.SubscribesAll() {
		return forward.HistoryLimits{}
	}
	c, d := a.cluster, config.Default()
	return forward.HistoryLimits{
		Window: time.Duration(cmp.Or(c.ReplayWindow, d.ReplayWindow)),
		Bytes:  int64(cmp.Or(c.ReplayBytes, d.ReplayBytes)),
		Margin: time.Duration(cmp.Or(c.ReplayMargin, d.ReplayMargin)),
	}
}

// peerInterest is the mesh's callback for a peer's interest. The forwarding
// loop applies it, in order with the messages before it, and replays what
// the peer missed.
func (a *Agent) peerInterest(peer string, ch mesh.InterestChange) {
	// The data session is not current from before the change reaches the
	// router until the follower has seen it (notify, after).
	a.dataFilters.changing()
	a.shares.planner.Peer(peer, ch.Replace, ch.Added, ch.Removed)
	a.forwarder.Interest(peer, ch, func(bad []string) {
		defer a.dataFilters.notify()
		if len(bad) > 0 {
			a.metrics.invalidPeerFilters.WithLabelValues(peer).Add(float64(len(bad)))
			a.log.Warn("peer advertised invalid filters, ignored", "peer", peer, "count", len(bad), "first", bad[0])
		}
	})
}

func (a *Agent) linkState(peer string, up bool) {
	a.router.SetLink(peer, up)
	a.shares.planner.SetLink(peer, up)
	a.replicas.linkState(peer, up)
	if up {
		// What the peer missed while away: a clean start there ends a
		// stale session, a move stops its replication (older ones are
		// ignored by time).
		a.mesh.AnnounceClientTo(peer, a.takeovers.RecentNotes())
		a.kickWG.Go(func() { a.sendDigest(peer) })
		a.log.Info("peer link up", "peer", peer)
	} else {
		a.log.Warn("peer link down", "peer", peer)
	}
}

// Run runs the agent until ctx ends. It returns an error only for a
// condition a restart cannot fix (bad broker logging, a port in use).
//
// When ctx ends, the share sessions leave their groups and finish what they
// took first, while the links and the data session still run; then the
// rest stops.
func (a *Agent) Run(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	defer cancel(nil)
	a.runCtx = ctx
	// Deferred in this order, the takeover and digest goroutines are waited
	// for after everything that can start them (the mesh) has stopped.
	defer a.kickWG.Wait()
	var wg sync.WaitGroup
	defer wg.Wait()

	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() {
		if err := srv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("agent: http: %w", err))
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		shutdown, done := context.WithTimeout(context.Background(), 2*time.Second)
		defer done()
		_ = srv.Shutdown(shutdown)
	})
	wg.Go(func() {
		if err := a.mesh.Run(ctx); err != nil && ctx.Err() == nil {
			cancel(err)
		}
	})
	wg.Go(func() { _ = a.forwarder.Run(ctx) })
	wg.Go(func() {
		if err := a.brokerLoop(ctx); err != nil {
			cancel(err)
		}
	})
	wg.Go(func() { a.replicas.run(ctx) })
	stopShares, sharesDone := make(chan struct{}), make(chan struct{})
	wg.Go(func() {
		defer close(sharesDone)
		a.shares.run(ctx, stopShares)
	})
	a.log.Info("agent started", "broker", a.node.Broker.Address, "cluster", a.node.Link, "http", a.httpLn.Addr().String())
	select {
	case <-parent.Done():
		close(stopShares)
		<-sharesDone
		cancel(nil)
	case <-ctx.Done():
	}
	err := context.Cause(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Ready reports whether clients should be sent to this node, and why not.
// A node is ready when its broker sessions are up and, with quorum
// majority, it can reach enough peers to form a strict majority of the
// configured nodes with them (docs/ARCHITECTURE.md, Readiness): a node cut off alone must not
// take clients. With quorum none (the default for two nodes) the broker
// sessions are enough.
func (a *Agent) Ready() (bool, string) {
	if !a.sessionUp.Load() {
		a.mu.Lock()
		defer a.mu.Unlock()
		return false, "broker session down: " + a.brokerErr
	}
	if a.cluster.EffectiveQuorum() == config.QuorumNone {
		return true, "ok"
	}
	reach := 1
	for _, p := range a.mesh.Status() {
		if p.Up {
			reach++
		}
	}
	total := len(a.cluster.Nodes)
	if reach*2 <= total {
		return false, fmt.Sprintf("reaches %d of %d nodes, not a majority", reach, total)
	}
	return true, "ok"
}

func (a *Agent) readyNow() bool {
	ok, _ := a.Ready()
	return ok
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Metrics returns the forwarding counters (tests assert them).
func (a *Agent) Metrics() *forward.Metrics { return a.forwarder.Metrics() }

// Clients returns the local client sessions the agent knows, with their
// filters.
func (a *Agent) Clients() map[string][]string { return a.table.Clients() }
