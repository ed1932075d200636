package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
	"github.com/moha-project/moha/internal/share"
	"github.com/moha-project/moha/internal/status"
	"github.com/moha-project/moha/internal/topic"
)

const (
	// shareReceiveMaximum bounds the messages in flight on one share
	// session: what an agent killed outright loses of the groups' messages
	// (a share session ends with its connection, and its queue with it).
	shareReceiveMaximum = 64
	// maxEchoes: a message published here again for a local member comes
	// back to the agent's own membership at most this often before it is
	// decided afresh (the broker's round robin moves past a member it just
	// served, so a second return means concurrent traffic).
	maxEchoes = 8
	// echoTTL and echoLimit bound the echo table.
	echoTTL   = 10 * time.Second
	echoLimit = 100000
	// shareStopTimeout bounds a clean stop's wait for the messages the
	// share sessions took (they leave, then what they hold is finished).
	shareStopTimeout = 3 * time.Second
)

// shares runs the agent's share sessions: one membership per group and
// member node elsewhere on the local broker, so that the broker's round
// robin gives the other nodes their turn (internal/share decides; the
// message a membership takes goes to a member node elsewhere). The run
// goroutine owns the sessions; their readers call take.
type shares struct {
	a       *Agent
	log     *slog.Logger
	planner *share.Planner
	echoes  *share.Echoes
	slots   []*shareSlot
	changed chan struct{} // the plan or a session changed (capacity 1)
	// held is every filter a membership is held or being taken for: the
	// republishes an own membership could take back (immutable trie).
	held        atomic.Pointer[topic.Trie]
	inflight    inflight
	taken       *prometheus.CounterVec
	lastDropLog atomic.Int64 // unix nanos of the last drop logged
	// memberships is what /status shows: every membership held, sorted.
	memberships atomic.Pointer[[]string]
}

// shareSlot is one share session.
type shareSlot struct {
	id     string
	sess   *session.Session       // run goroutine only; nil while down
	held   map[share.Group]uint32 // run goroutine only: group -> subscription identifier
	nextID uint32                 // run goroutine only

	mu   sync.Mutex
	byID map[uint32]share.Group // read by the session's reader
}

func newShares(a *Agent, peers []string, slots int) *shares {
	s := &shares{
		a:       a,
		log:     a.log,
		echoes:  share.NewEchoes(echoTTL, echoLimit),
		changed: make(chan struct{}, 1),
		taken: promauto.With(a.registry).NewCounterVec(prometheus.CounterOpts{
			Name: "moha_shared_taken_total",
			Help: "Messages of shared subscription groups the agent's own memberships took, by what became of them: forwarded (to a member node elsewhere), served_elsewhere (a member node receiving it anyway serves the group), kept (no member node elsewhere reachable: published here again for a local member), echoed (the agent's own republish came back: published again for a local member), dropped (no member took it; logged).",
		}, []string{"outcome"}),
	}
	// The table is made after the shares: read it when a group first needs it.
	plain := func(yield func(string) bool) { a.table.EachPlainAdvertised(yield) }
	s.planner = share.NewPlanner(peers, slots, plain, s.notify)
	s.held.Store(topic.NewTrie())
	for i := range slots {
		s.slots = append(s.slots, &shareSlot{id: a.ids.share(i), held: map[share.Group]uint32{}, byID: map[uint32]share.Group{}})
	}
	promauto.With(a.registry).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_shared_memberships",
		Help: "Shared subscription memberships the agent holds on its broker (one per group and member node elsewhere).",
	}, func() float64 { return float64(len(s.membershipList())) })
	return s
}

func (s *shares) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// run keeps the memberships what the planner wants until stopping closes
// (a clean stop: leave the groups, finish what was taken, then return) or
// ctx ends (everything else has stopped: close at once).
func (s *shares) run(ctx context.Context, stopping <-chan struct{}) {
	if len(s.slots) == 0 {
		return
	}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("share sessions: will retry", "err", err)
			retry.Reset(time.Second + rand.N(500*time.Millisecond))
		}
		select {
		case <-s.changed:
		case <-retry.C:
		case <-stopping:
			s.leave(ctx)
			return
		case <-ctx.Done():
			s.closeAll()
			return
		}
	}
}

// reconcile connects the share sessions that need to hold something and
// moves each one's memberships to the plan.
func (s *shares) reconcile(ctx context.Context) error {
	want := s.planner.Want()
	s.publishHeld(want)
	defer s.publishHeld(want)
	var firstErr error
	for i, slot := range s.slots {
		if err := s.reconcileSlot(ctx, slot, want[i]); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	s.showMemberships()
	return firstErr
}

// showMemberships publishes the memberships held for /status and metrics.
func (s *shares) showMemberships() {
	var all []string
	for _, slot := range s.slots {
		for g := range slot.held {
			all = append(all, g.Subscription())
		}
	}
	slices.Sort(all)
	s.memberships.Store(&all)
}

func (s *shares) status(mode string) status.SharedStatus {
	return status.SharedStatus{Mode: mode, EchoesPending: s.echoes.Len(), Memberships: s.membershipList()}
}

func (s *shares) membershipList() []string {
	if m := s.memberships.Load(); m != nil {
		return *m
	}
	return nil
}

func (s *shares) reconcileSlot(ctx context.Context, slot *shareSlot, want []share.Group) error {
	if slot.sess != nil && isDone(slot.sess) {
		s.lost(slot)
	}
	if slot.sess == nil {
		if len(want) == 0 {
			return nil
		}
		if err := s.dial(ctx, slot); err != nil {
			return err
		}
	}
	wanted := map[share.Group]bool{}
	for _, g := range want {
		wanted[g] = true
	}
	var leave []string
	for g := range slot.held {
		if !wanted[g] {
			leave = append(leave, g.Subscription())
		}
	}
	if len(leave) > 0 {
		if err := slot.sess.Unsubscribe(ctx, leave...); err != nil {
			return err
		}
		for _, f := range leave {
			g, _ := share.ParseGroup(f)
			slot.forget(g)
		}
	}
	for _, g := range want {
		if _, ok := slot.held[g]; ok {
			continue
		}
		slot.nextID++
		id := slot.nextID
		slot.remember(g, id)
		// Retain handling 2: the membership must not be handed the
		// retained messages (it is not a subscriber).
		sub := session.Subscription{Filter: g.Subscription(), QoS: 2, RetainHandling: 2, ID: id}
		if err := slot.sess.Subscribe(ctx, sub); err != nil {
			slot.forget(g)
			return err
		}
	}
	return nil
}

func (slot *shareSlot) remember(g share.Group, id uint32) {
	slot.held[g] = id
	slot.mu.Lock()
	slot.byID[id] = g
	slot.mu.Unlock()
}

func (slot *shareSlot) forget(g share.Group) {
	id, ok := slot.held[g]
	if !ok {
		return
	}
	delete(slot.held, g)
	slot.mu.Lock()
	delete(slot.byID, id)
	slot.mu.Unlock()
}

// group returns the group a subscription identifier was given to.
func (slot *shareSlot) group(id uint32) (share.Group, bool) {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	g, ok := slot.byID[id]
	return g, ok
}

// publishHeld installs the filters the echo table must follow: those held
// and those about to be (a membership may take a message before its
// SUBACK is read).
func (s *shares) publishHeld(want [][]share.Group) {
	t := topic.NewTrie()
	for i, slot := range s.slots {
		for g := range slot.held {
			_, _ = t.Add(g.Filter)
		}
		for _, g := range want[i] {
			_, _ = t.Add(g.Filter)
		}
	}
	s.held.Store(t)
}

func (s *shares) dial(ctx context.Context, slot *shareSlot) error {
	cfg := s.a.sessionConfig(slot.id)
	cfg.CleanStart, cfg.SessionExpiry, cfg.ReceiveMaximum = true, 0, shareReceiveMaximum
	sess, err := session.Dial(ctx, cfg, func(d *session.Delivery) { s.take(slot, d) })
	if err != nil {
		return err
	}
	slot.sess = sess
	clear(slot.held)
	slot.mu.Lock()
	clear(slot.byID)
	slot.mu.Unlock()
	go func() {
		<-sess.Done()
		s.notify()
	}()
	return nil
}

// lost forgets a session that ended: its memberships ended with it.
func (s *shares) lost(slot *shareSlot) {
	s.a.table.OwnConnectionGone(slot.id)
	s.log.Warn("share session lost", "client_id", slot.id, "err", slot.sess.Err())
	slot.sess = nil
	for g := range slot.held {
		slot.forget(g)
	}
}

// leave ends every membership, waits (bounded) until the messages taken
// are finished, and closes the sessions: a clean stop loses none of them.
func (s *shares) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, shareStopTimeout)
	defer cancel()
	for _, slot := range s.slots {
		if slot.sess == nil || len(slot.held) == 0 {
			continue
		}
		var filters []string
		for g := range slot.held {
			filters = append(filters, g.Subscription())
		}
		if err := slot.sess.Unsubscribe(ctx, filters...); err != nil {
			s.log.Warn("share session: leaving the groups failed", "client_id", slot.id, "err", err)
		}
	}
	if n := s.inflight.wait(ctx); n > 0 {
		s.taken.WithLabelValues("dropped").Add(float64(n))
		s.log.Error("stopping: messages taken for shared subscription groups not finished in time, lost", "messages", n, "waited", shareStopTimeout)
	}
	s.closeAll()
}

func (s *shares) closeAll() {
	for _, slot := range s.slots {
		if slot.sess != nil {
			s.a.table.OwnConnectionGone(slot.id)
			_ = slot.sess.Close()
			slot.sess = nil
			for g := range slot.held {
				slot.forget(g)
			}
		}
	}
	s.showMemberships()
}

// take handles a message one of the agent's memberships took. It runs on
// the session's reader and does not block.
func (s *shares) take(slot *shareSlot, d *session.Delivery) {
	if d.Message.Retain {
		d.Ack() // a retained message handed out at subscribe time: not a publish
		return
	}
	s.inflight.add()
	done := func() {
		d.Ack()
		s.inflight.done()
	}
	m := d.Message
	now := time.Now()
	attempts, echo := s.echoes.Take(&m, now)
	if echo && attempts < maxEchoes {
		s.taken.WithLabelValues("echoed").Inc()
		s.publishHere(m, attempts+1, done)
		return
	}
	g, known := slot.group(d.SubID)
	if !known {
		// A membership left since; whatever its group, members here get
		// their turn.
		s.keep(m, attempts, done)
		return
	}
	dec := s.planner.Decide(g, func(peer string) bool { return s.a.router.Receives(peer, m.Topic) })
	switch dec.Action {
	case share.Forward:
		s.forward(dec.Peer, m, attempts, done)
	case share.ServedElsewhere:
		s.taken.WithLabelValues(dec.Action.String()).Inc()
		done()
	default:
		s.keep(m, attempts, done)
	}
}

// keep publishes m here again for a local member, unless it came back
// too often already: then no member takes it (the group has none here,
// and none reachable elsewhere), and it is dropped, counted and logged.
func (s *shares) keep(m message.Message, attempts int, done func()) {
	if attempts >= maxEchoes {
		s.taken.WithLabelValues("dropped").Inc()
		if last := s.lastDropLog.Load(); time.Since(time.Unix(0, last)) > 10*time.Second && s.lastDropLog.CompareAndSwap(last, time.Now().UnixNano()) {
			s.log.Warn("shared subscription message dropped: no member took it (logged once per 10 s; moha_shared_taken_total{outcome=\"dropped\"} counts all)", "topic", m.Topic, "returns", attempts)
		}
		done()
		return
	}
	s.taken.WithLabelValues(share.Keep.String()).Inc()
	s.publishHere(m, attempts+1, done)
}

// forward sends m to a member node elsewhere; if the peer cannot take it,
// a member here gets it instead.
func (s *shares) forward(peer string, m message.Message, attempts int, done func()) {
	m.Retain = false
	err := s.a.mesh.Send(s.a.runCtx, peer, m, func(o message.Outcome) {
		switch o {
		case message.Acked, message.Buffered:
			s.taken.WithLabelValues(share.Forward.String()).Inc()
			done()
		default:
			s.keep(m, attempts, done)
		}
	})
	if err != nil {
		s.keep(m, attempts, done)
	}
}

// publishHere republishes m into the local broker, noting it as an echo
// first: the broker's round robin may hand it to an own membership again.
func (s *shares) publishHere(m message.Message, attempts int, done func()) {
	m.Retain = false
	s.echoes.Note(&m, attempts, time.Now())
	s.a.republisher.deliver(shareOrigin, m, done)
}

// shareOrigin labels the republisher's series for the messages the share
// sessions publish here again.
const shareOrigin = "(shared)"

// fromPeer notes a peer's message about to be republished here, when an own
// membership could take it back.
func (s *shares) fromPeer(m *message.Message) {
	if t := s.held.Load(); t.Len() > 0 && t.Matches(m.Topic) {
		s.echoes.Note(m, 0, time.Now())
	}
}

func isDone(sess *session.Session) bool {
	select {
	case <-sess.Done():
		return true
	default:
		return false
	}
}

// inflight counts the messages the share sessions took and did not finish.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0 while someone waits
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.zero != nil {
		close(f.zero)
		f.zero = nil
	}
}

// wait returns once nothing is in flight (0) or ctx ends (what is left).
func (f *inflight) wait(ctx context.Context) int {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return 0
	}
	if f.zero == nil {
		f.zero = make(chan struct{})
	}
	zero := f.zero
	f.mu.Unlock()
	select {
	case <-zero:
		return 0
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n
	}
}
