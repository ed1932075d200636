package agent

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/replica"
	"github.com/moha-project/moha/internal/status"
)

// replicaMoveGrace is how long a replica whose client connected at another
// node waits for that node to claim it before it ends.
const replicaMoveGrace = 10 * time.Second

// replicaFlush is how often changed sessions are announced, at most.
const replicaFlush = 100 * time.Millisecond

// replicas runs session replication (docs/SESSIONS.md): as a holder, it
// tells the nodes where the load balancer sends a client next to keep a
// replica of each persistent session held here; as a replica node, it keeps
// the replicas peers ask for, one replicaRunner each. The run goroutine owns
// the announcer, the keeper and the runners; callbacks from other
// goroutines reach it through the inbox.
type replicas struct {
	a         *Agent
	announcer *replica.Announcer
	keeper    *replica.Keeper
	runners   map[string]*replicaRunner
	ids       sync.Map // id -> *replicaRunner: the replicas kept here, until their runner is done (read by the log reader)
	// byClient holds the ids whose last connect line here was a client's
	// (true) or the agent's replica connection (false): only a session a
	// client made here is held here and announced.
	byClient  sync.Map
	inbox     inbox
	changedMu sync.Mutex
	changed   map[string]struct{} // sessions changed since the last flush (the table's hook)
	holderUp  map[string]bool     // peers whose link is up (run goroutine only)
	// silent: the interest table is degraded (after a restart it does not
	// know the sessions the broker restored): nothing is announced, peers
	// keep the replicas they have, until resync (run goroutine only).
	silent    bool
	kept      atomic.Int64
	announced atomic.Int64
	started   prometheus.Counter
	promoted  prometheus.Counter
	ended     prometheus.Counter
	released  prometheus.Counter
}

func newReplicas(a *Agent, nodes []string) *replicas {
	f := promauto.With(a.registry)
	r := &replicas{
		a:         a,
		announcer: replica.NewAnnouncer(a.node.Name, nodes, a.cluster.Replicas()),
		keeper:    replica.NewKeeper(replicaMoveGrace),
		runners:   map[string]*replicaRunner{},
		holderUp:  map[string]bool{},
		changed:   map[string]struct{}{},
		silent:    true,
		inbox:     inbox{wake: make(chan struct{}, 1)},
		started: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_replicas_started_total",
			Help: "Session replicas this node started keeping for a persistent session held on another node.",
		}),
		promoted: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_replicas_promoted_total",
			Help: "Session replicas whose client connected here (after its node died, or moved): the replica became its session.",
		}),
		ended: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_replicas_ended_total",
			Help: "Session replicas ended here (the session ended or moved, or another node keeps its replica now).",
		}),
		released: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_replica_released_messages_total",
			Help: "Messages replicas acknowledged to their broker once older than session_replica_window while their client was online at its holder.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_replicas",
		Help: "Session replicas this node keeps for persistent sessions held on other nodes.",
	}, func() float64 { return float64(r.kept.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_replicated_sessions",
		Help: "Persistent sessions held here whose replicas other nodes keep (announced).",
	}, func() float64 { return float64(r.announced.Load()) })
	return r
}

// isReplica reports whether id is a replica kept here: its connect lines
// from the agent's own addresses are the replica's, not a client's.
func (r *replicas) isReplica(id string) bool {
	_, ok := r.ids.Load(id)
	return ok
}

// Callbacks: each queues an event for the run goroutine and never blocks.

// sessionsChanged is the table's session hook. The changes are collected
// and announced every replicaFlush: a client subscribing many filters costs
// one announcement per interval, not one per filter.
func (r *replicas) sessionsChanged(ids []string) {
	r.changedMu.Lock()
	for _, id := range ids {
		r.changed[id] = struct{}{}
	}
	r.changedMu.Unlock()
}

func (r *replicas) takeChanged() []string {
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	if len(r.changed) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(r.changed))
	clear(r.changed)
	return ids
}

func (r *replicas) linkState(peer string, up bool) {
	r.inbox.put(func() { r.onLink(peer, up) })
}
func (r *replicas) peerSessions(peer string, ch mesh.SessionChange) {
	r.inbox.put(func() { r.apply(r.filterHeld(peer, r.keeper.Apply(peer, ch, time.Now()))) })
}

// peerClient: the client connected at peer. With moved, a session held
// here is not any more (its new node announces it; with clean start the
// takeover ends it here).
func (r *replicas) peerClient(peer string, n mesh.ClientNote, moved bool) {
	if moved {
		r.byClient.Store(n.ID, false)
	}
	r.inbox.put(func() {
		if moved {
			r.send(r.announcer.Update(mesh.SessionNote{ID: n.ID}, false))
		}
		r.apply(r.keeper.ClientAt(peer, n.ID, n.Clean, time.Unix(0, n.At), time.Now()))
	})
}

// sessionMaker says whose connection a connect line shows.
type sessionMaker int

const (
	madeByNobody  sessionMaker = iota // not a connect line, or the agent's takeover
	madeByClient                      // the client's own
	madeByReplica                     // the agent's replica connection (or the one ending it)
)

// connected records whose connection made id's session here, once the
// table has applied the line. A client's connection promotes a replica
// kept for id.
func (r *replicas) connected(id string, maker sessionMaker) {
	switch maker {
	case madeByClient:
		r.byClient.Store(id, true)
		r.sessionsChanged([]string{id}) // looked at again now that it is known as the client's
		if r.isReplica(id) {
			r.inbox.put(func() { r.promote(id) })
		}
	case madeByReplica:
		r.byClient.Store(id, false)
	}
}

// madeHere reports whether id's session here was made by its client.
func (r *replicas) madeHere(id string) bool {
	v, ok := r.byClient.Load(id)
	return ok && v.(bool)
}

// run owns the bookkeeping until ctx ends; the runners stop with it
// (their sessions stay on the broker until the holders' next Replace
// starts them afresh).
func (r *replicas) run(ctx context.Context) {
	flush := time.NewTicker(replicaFlush)
	defer flush.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.inbox.wake:
			r.onSessions(r.takeChanged()) // what changed before the event comes first
			for _, f := range r.inbox.take() {
				f()
			}
		case now := <-flush.C:
			r.followDegraded()
			r.onSessions(r.takeChanged())
			r.apply(r.keeper.Expire(now))
		}
		r.startRunners(ctx, &wg)
	}
}

// followDegraded turns announcing off while the interest table is
// degraded, and on again with a resync when it is not.
func (r *replicas) followDegraded() {
	degraded, _ := r.a.table.Degraded()
	if degraded == r.silent {
		return
	}
	r.silent = degraded
	if !degraded {
		r.resync()
	}
}

// resync announces afresh: every live peer gets a Replace with every
// session it must keep a replica of.
func (r *replicas) resync() {
	r.announcer = replica.NewAnnouncer(r.a.node.Name, r.a.cluster.NodeNames(), r.a.cluster.Replicas())
	for peer, up := range r.holderUp {
		if up {
			r.announcer.SetLive(peer, true) // nothing held yet: nothing to send
		}
	}
	for _, s := range r.a.table.PersistentSessions() {
		if r.held(s.ID, s) {
			r.announcer.Update(sessionNote(s.ID, s), true) // sent below, whole
		}
	}
	for _, peer := range slices.Sorted(maps.Keys(r.holderUp)) {
		if r.holderUp[peer] {
			r.a.mesh.SendSessions(peer, mesh.SessionChange{Replace: true, Notes: r.announcer.Snapshot(peer)})
		}
	}
	r.announced.Store(int64(r.announcer.Held()))
}

// held reports whether this node holds id's session: persistent, made
// here by its client, not a replica kept for another node.
func (r *replicas) held(id string, info interest.SessionInfo) bool {
	return info.Persistent() && r.madeHere(id) && !r.keeper.Holds(id)
}

// onSessions announces the changes of sessions held here.
func (r *replicas) onSessions(ids []string) {
	for _, id := range ids {
		if !r.a.table.Known(id) {
			r.byClient.Delete(id) // the session ended: nothing to remember
		}
	}
	if r.silent || r.a.cluster.Replicas() == 0 {
		return // resync will tell; or no peer keeps replicas: nothing to tell
	}
	for _, id := range ids {
		if !r.announcer.Holds(id) && !(r.madeHere(id) && r.a.table.Persistent(id)) {
			continue // a replica's own session, or a clean one: nothing to tell
		}
		info, ok := r.a.table.Session(id)
		r.send(r.announcer.Update(sessionNote(id, info), ok && r.held(id, info)))
	}
	r.announced.Store(int64(r.announcer.Held()))
}

func (r *replicas) onLink(peer string, up bool) {
	r.holderUp[peer] = up
	if !r.silent {
		r.send(r.announcer.SetLive(peer, up))
		r.announced.Store(int64(r.announcer.Held()))
	}
	for _, id := range r.keeper.ByHolder(peer) {
		if rn := r.runners[id]; rn != nil {
			rn.setHolderUp(up)
		}
	}
}

func (r *replicas) send(sends []replica.Send) {
	for _, s := range sends {
		r.a.mesh.SendSessions(s.Peer, s.Change)
	}
}

// filterHeld turns away a peer's request for a replica of a session whose
// client is connected here: this node holds it (the peer's view is stale;
// the client's CLIENT announcement reaches it). A session held here
// offline is no longer announced from here and becomes a replica, started
// afresh (the peer holds the session now).
func (r *replicas) filterHeld(peer string, actions []replica.Action) []replica.Action {
	return slices.DeleteFunc(actions, func(act replica.Action) bool {
		if act.Kind != replica.Start {
			return false
		}
		info, ok := r.a.table.Session(act.ID)
		if ok && info.Connected {
			r.keeper.Promote(act.ID)
			r.a.log.Info("a peer asked for a replica of a session whose client is connected here: kept as held", "client", act.ID, "peer", peer)
			return true
		}
		if ok {
			r.send(r.announcer.Update(mesh.SessionNote{ID: act.ID}, false))
		}
		return false
	})
}

// apply carries out the keeper's decisions.
func (r *replicas) apply(actions []replica.Action) {
	for _, act := range actions {
		switch act.Kind {
		case replica.Start:
			rn := newReplicaRunner(r, act.ID, act.Holder, act.Note, r.holderUp[act.Holder])
			r.ids.Store(act.ID, rn)
			r.runners[act.ID] = rn
			r.started.Inc()
			r.a.log.Debug("keeping a session replica", "client", act.ID, "holder", act.Holder)
		case replica.Update:
			if rn := r.runners[act.ID]; rn != nil {
				rn.update(act.Note, act.Holder, r.holderUp[act.Holder])
			}
		case replica.End:
			if rn := r.runners[act.ID]; rn != nil {
				rn.end()
				delete(r.runners, act.ID)
			}
			r.ended.Inc()
			r.a.log.Debug("session replica ended", "client", act.ID)
		}
	}
	r.kept.Store(int64(r.keeper.Len()))
}

// startRunners starts the goroutines of runners added since the last call.
func (r *replicas) startRunners(ctx context.Context, wg *sync.WaitGroup) {
	for _, rn := range r.runners {
		if rn.startOnce() {
			wg.Go(func() { rn.run(ctx) })
		}
	}
}

// promote: the client connected here, taking the replica's session over.
// Its runner stops without touching the session, and the session is
// announced as held here.
func (r *replicas) promote(id string) {
	if !r.keeper.Promote(id) {
		return
	}
	if rn := r.runners[id]; rn != nil {
		rn.stop()
		delete(r.runners, id)
	}
	r.ids.Delete(id)
	r.promoted.Inc()
	r.kept.Store(int64(r.keeper.Len()))
	r.a.log.Info("a client resumed its session from the replica kept here", "client", id)
	r.onSessions([]string{id})
}

// status is what /status shows of replication.
func (r *replicas) status() status.Replication {
	return status.Replication{Replicas: r.a.cluster.Replicas(), Replicated: int(r.announced.Load()), Kept: int(r.kept.Load())}
}

// sessionNote is what peers are told of a session held here. Shared
// subscriptions are left out: a replica's membership would take the group's
// turns from the real members.
func sessionNote(id string, info interest.SessionInfo) mesh.SessionNote {
	n := mesh.SessionNote{ID: id, Online: info.Connected, Protocol: byte(info.Protocol)}
	for _, f := range info.Filters {
		if !strings.HasPrefix(f.Filter, "$share/") {
			n.Filters = append(n.Filters, mesh.SessionFilter{Filter: f.Filter, QoS: f.QoS})
		}
	}
	return n
}

// inbox queues functions for one goroutine to run, in order; put never
// blocks.
type inbox struct {
	mu    sync.Mutex
	queue []func()
	wake  chan struct{}
}

func (b *inbox) put(f func()) {
	b.mu.Lock()
	b.queue = append(b.queue, f)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *inbox) take() []func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queue
	b.queue = nil
	return q
}
