package mesh

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/linkdefault"
	"github.com/moha-project/moha/internal/message"
)

// Outcome is what became of a message given to Send: message.Outcome,
// which the forwarder reads without importing the mesh.
type Outcome = message.Outcome

// The outcomes, named here for the mesh's own code.
const (
	Acked     = message.Acked
	Buffered  = message.Buffered
	Dropped   = message.Dropped
	Abandoned = message.Abandoned
)

// item is one message held for a peer. done is nil once the outcome was
// reported (a Buffered message is still held and resent, silently).
type item struct {
	msg  message.Message
	done func(Outcome)
	size int
	bulk bool // from SendWait: sent only when no live message waits
}

// peer is everything the mesh keeps about one configured peer across its
// links: the queue, the in-flight window of the current link, counters.
type peer struct {
	name  string
	addr  string
	dials bool // this node dials the peer (its name sorts lower)
	mesh  *Mesh
	pm    *peerMetrics

	installMu  sync.Mutex // serializes link replacement
	interestMu sync.Mutex // serializes Handlers.Interest calls for this peer

	mu        sync.Mutex
	link      *link      // the current link, nil while down
	queue     fifo[item] // live messages not yet sent on the current link
	bulk      fifo[item] // bulk transfers not yet sent on the current link
	inflight  fifo[item] // sent on the current link; the first has seq acked+1
	acked     uint64     // highest seq the peer acknowledged on the current link
	nextSeq   uint64     // seq of the next message written on the current link
	heldBytes int64      // size of the live messages queued or in flight
	// Bulk messages queued or in flight, and those in flight: bulk has
	// limits of its own, so that it never takes live messages' room, and
	// a bounded share of the window, so that a live message waits behind
	// at most that many (no head-of-line blocking behind a retained sync).
	bulkHeld, bulkInflight int
	bulkBytes              int64
	waiters                int           // Sends blocked for room
	changed                chan struct{} // closed (and replaced) when waiters should look again
	since                  time.Time     // last up/down change
	downSince              time.Time
	epoch                  uint64 // the peer's process epoch, from its last hello
	// progress is when the peer last acknowledged something, or when it
	// was last given something to acknowledge with nothing outstanding.
	progress time.Time
	// stalled: the link is up but the peer acknowledged nothing for
	// StallAfter; its messages are reported Buffered as for a peer that is
	// down, until an ack shows it moving again.
	stalled bool
	// brokerDown: the peer reported (BROKER frame) that its broker
	// sessions are down: treated as down for outcomes until it reports up.
	brokerDown bool
	gone       bool
	closed     bool
	dropLog    rateLimit

	sentMessages, sentBytes, recvMessages, recvBytes, dropped atomic.Uint64
	// heard is when the current link last read a frame from the peer
	// (unix nanos); heartbeats keep it within a second while it is up.
	heard                      atomic.Int64
	batchesSent, ackFramesSent atomic.Uint64
}

func newPeer(m *Mesh, name, addr string) *peer {
	return &peer{
		name:    name,
		addr:    addr,
		dials:   linkdefault.Dials(m.cfg.Node, name),
		mesh:    m,
		pm:      m.metrics.forPeer(name),
		changed: make(chan struct{}),
	}
}

// held returns the number of live messages queued or in flight.
func (p *peer) held() int { return p.queue.len() + p.inflight.len() - p.bulkInflight }

// fits reports whether one more message of size fits the buffer limits.
// An empty buffer always takes one message, so no message waits forever.
func (p *peer) fits(size int) bool {
	cfg := &p.mesh.cfg
	held := p.held()
	return held == 0 || (held < cfg.BufferMessages && p.heldBytes+int64(size) <= cfg.BufferBytes)
}

// bulkLimits returns how many bulk messages, and how many bytes of them, a
// peer holds at most, and how many of them may be in flight.
func (p *peer) bulkLimits() (messages, inflight int, bytes int64) {
	cfg := &p.mesh.cfg
	messages = min(cfg.BufferMessages, cfg.Window)
	return messages, max(1, min(messages, cfg.Window/4)), cfg.BufferBytes / 4
}

// bulkFits is fits for a bulk message.
func (p *peer) bulkFits(size int) bool {
	messages, _, bytes := p.bulkLimits()
	return p.bulkHeld == 0 || (p.bulkHeld < messages && p.bulkBytes+int64(size) <= bytes)
}

// signalLocked wakes Sends waiting for room or for a state change.
func (p *peer) signalLocked() {
	if p.waiters > 0 {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *peer) updateGaugesLocked() {
	p.pm.queue.Set(float64(p.queue.len() + p.bulk.len()))
	p.pm.inflight.Set(float64(p.inflight.len()))
}

// enqueue holds it for the peer, or reports why not. When the buffer is
// full it drops a live message (counted) — a peer that does not keep up is
// treated as one that is down, so that it never holds up the others — but
// returns a channel closed when to retry for a bulk one. A bulk message
// for a peer whose link is down is refused with ErrPeerDown: the next
// link's exchange decides what to send.
func (p *peer) enqueue(it item) (retry <-chan struct{}, err error) {
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return nil, ErrClosed
	case p.gone:
		p.mu.Unlock()
		p.drop(it, dropGone)
		return nil, nil
	case it.bulk && p.link == nil:
		p.mu.Unlock()
		return nil, ErrPeerDown
	case it.bulk && !p.bulkFits(it.size):
		p.waiters++
		retry = p.changed
		p.mu.Unlock()
		return retry, nil
	case !it.bulk && !p.fits(it.size):
		reason := dropFull
		if p.link == nil {
			reason = dropOverflow
		}
		p.mu.Unlock()
		p.drop(it, reason)
		return nil, nil
	}
	l := p.link
	done := it.done
	buffered := l == nil || p.stalled || p.brokerDown
	if buffered {
		it.done = nil // reported Buffered now
	}
	if it.bulk {
		p.bulk.push(it)
		p.bulkHeld++
		p.bulkBytes += int64(it.size)
	} else {
		p.queue.push(it)
		p.heldBytes += int64(it.size)
	}
	p.updateGaugesLocked()
	p.mu.Unlock()
	if buffered {
		p.mesh.notify(done, Buffered)
	}
	if l != nil {
		l.wakeWriter()
	}
	return nil, nil
}

func (p *peer) stopWaiting() {
	p.mu.Lock()
	p.waiters--
	p.mu.Unlock()
}

// drop reports it Dropped and counts it; the log line is rate limited.
func (p *peer) drop(it item, reason string) {
	p.countDropped(reason, 1)
	p.mesh.notify(it.done, Dropped)
}

func (p *peer) countDropped(reason string, n int) {
	if n == 0 {
		return
	}
	p.countOnly(reason, n)
	p.mu.Lock()
	suppressed, ok := p.dropLog.allow(time.Now(), n)
	p.mu.Unlock()
	if ok {
		p.mesh.log.Warn("dropping messages for peer", "peer", p.name, "reason", reason,
			"count", n, "suppressed", suppressed)
	}
}

func (p *peer) countOnly(reason string, n int) {
	p.dropped.Add(uint64(n))
	p.pm.drop(reason, n)
}

// takeBatch moves the next messages that the window allows from the queue
// to in-flight and appends them to dst, stopping once their encoded size
// passes batchTargetSize. It returns the first one's seq.
func (p *peer) takeBatch(l *link, dst []item) (firstSeq uint64, batch []item) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.link != l {
		return 0, dst
	}
	room := p.mesh.cfg.Window - p.inflight.len()
	if p.inflight.len() == 0 {
		p.progress = time.Now() // the peer owes nothing yet: no stall so far
	}
	size, props := 0, 0
	for room > 0 && size < batchTargetSize && len(dst) < maxBatchMessages {
		q := p.nextQueueLocked()
		if q == nil {
			break
		}
		if props += len(q.peek().msg.Props.User); props > maxBatchUserProps {
			break // the next batch takes it (one message alone always fits: Send checks)
		}
		it := q.pop()
		if it.bulk {
			p.bulkInflight++
		}
		size += encodedSize(&it.msg)
		p.inflight.push(it)
		dst = append(dst, it)
		room--
	}
	if len(dst) == 0 {
		return 0, dst
	}
	firstSeq = p.nextSeq
	p.nextSeq += uint64(len(dst))
	p.updateGaugesLocked()
	return firstSeq, dst
}

// nextQueueLocked returns the queue the next message to send comes from:
// live messages first, bulk ones while their share of the window allows;
// nil when neither has one to send.
func (p *peer) nextQueueLocked() *fifo[item] {
	if p.queue.len() > 0 {
		return &p.queue
	}
	if _, inflight, _ := p.bulkLimits(); p.bulk.len() > 0 && p.bulkInflight < inflight {
		return &p.bulk
	}
	return nil
}

// ack handles a cumulative ACK from the peer on link l.
func (p *peer) ack(l *link, upTo uint64) error {
	p.mu.Lock()
	if p.link != l || upTo <= p.acked {
		p.mu.Unlock()
		return nil
	}
	if upTo >= p.nextSeq {
		p.mu.Unlock()
		return fmt.Errorf("%w: ack for seq %d, only %d sent", ErrProtocol, upTo, p.nextSeq-1)
	}
	p.progress = time.Now()
	if p.stalled {
		p.stalled = false
		p.mesh.log.Info("peer acknowledges again", "peer", p.name)
	}
	dones := make([]func(Outcome), 0, upTo-p.acked)
	for ; p.acked < upTo; p.acked++ {
		it := p.inflight.pop()
		p.releaseLocked(&it)
		if it.done != nil {
			dones = append(dones, it.done)
		}
	}
	p.signalLocked()
	p.updateGaugesLocked()
	p.mu.Unlock()
	for _, done := range dones {
		done(Acked)
	}
	l.wakeWriter() // the window has room again
	return nil
}

// releaseLocked takes an acknowledged message out of the held counts.
func (p *peer) releaseLocked(it *item) {
	if !it.bulk {
		p.heldBytes -= int64(it.size)
		return
	}
	p.bulkHeld--
	p.bulkInflight--
	p.bulkBytes -= int64(it.size)
}

// requeueLocked puts what is in flight back at the front of the queues, in
// order, for the next link.
func (p *peer) requeueLocked() {
	var live, bulk []item
	for _, it := range p.inflight.drain() {
		if it.bulk {
			bulk = append(bulk, it)
		} else {
			live = append(live, it)
		}
	}
	p.queue.prepend(live)
	p.bulk.prepend(bulk)
	p.bulkInflight = 0
}

// install makes l the peer's link, first ending (and waiting for) the one
// it replaces, so the old link's unacknowledged messages are back in the
// queue before l sends anything.
func (p *peer) install(l *link, epoch uint64) {
	p.installMu.Lock()
	defer p.installMu.Unlock()
	p.mu.Lock()
	old := p.link
	p.mu.Unlock()
	if old != nil {
		old.cancel(errReplaced)
		<-old.finished
	}
	p.mu.Lock()
	p.link = l
	p.acked, p.nextSeq = 0, 1
	p.since = time.Now()
	p.progress, p.stalled, p.brokerDown = p.since, false, false
	p.epoch = epoch
	p.gone = false
	p.signalLocked()
	p.mu.Unlock()
	p.pm.up.Set(1)
	p.pm.connects.Inc()
	if h := p.mesh.handlers.LinkState; h != nil {
		h(p.name, true)
	}
}

// detach marks the peer down after link l ended: its in-flight messages go
// back to the front of the queue, and every held message whose outcome was
// not reported yet is reported Buffered.
func (p *peer) detach(l *link) {
	p.mu.Lock()
	if p.link != l {
		p.mu.Unlock()
		return
	}
	p.link = nil
	now := time.Now()
	p.since, p.downSince = now, now
	p.requeueLocked()
	// A link that ends because the mesh stops leaves what it held owed:
	// shutdown reports it Abandoned, not Buffered for a return.
	var dones []func(Outcome)
	if !p.mesh.stopping.Load() {
		dones = p.takeOwedLocked()
	}
	p.signalLocked()
	p.updateGaugesLocked()
	p.mu.Unlock()
	for _, done := range dones {
		done(Buffered)
	}
	p.pm.up.Set(0)
	if h := p.mesh.handlers.LinkState; h != nil {
		h(p.name, false)
	}
}

// takeOwedLocked returns the outcomes still owed for what the peer holds
// (in flight, then queued, in order) and marks them reported: the caller
// reports them Buffered; the messages stay held and are resent.
func (p *peer) takeOwedLocked() []func(Outcome) {
	var dones []func(Outcome)
	take := func(it *item) {
		if it.done != nil {
			dones = append(dones, it.done)
			it.done = nil
		}
	}
	p.inflight.each(take)
	p.queue.each(take)
	p.bulk.each(take)
	return dones
}

// setBrokerState applies the peer's report (a BROKER frame on link l) that
// its broker sessions are up or down. Down: what it holds is reported
// Buffered, as for a stall, and new messages are Buffered while they fit;
// they are still sent as the window allows, and the peer republishes them
// once its broker is back. Up: outcomes follow its acks again.
func (p *peer) setBrokerState(l *link, up bool) {
	p.mu.Lock()
	if p.link != l || p.brokerDown == !up {
		p.mu.Unlock()
		return
	}
	p.brokerDown = !up
	var dones []func(Outcome)
	if !up {
		dones = p.takeOwedLocked()
	} else {
		p.progress = time.Now() // what it owes now is owed from here
	}
	held := p.held()
	p.pm.brokerDown.Set(boolGauge(!up))
	p.mu.Unlock()
	if up {
		p.mesh.log.Info("peer reports its broker up again", "peer", p.name, "held", held)
	} else {
		p.mesh.log.Warn("peer reports its broker down: buffering for it as for a peer that is down", "peer", p.name, "held", held)
	}
	for _, done := range dones {
		done(Buffered)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stallIfStuck treats the peer as down, for the outcomes of what it holds,
// when its link is up but it acknowledged nothing it owes for StallAfter:
// its broker is hung (a SIGSTOP, a disk stall). Everything held is
// reported Buffered (the origin broker may then acknowledge it and go on),
// stays queued and is sent as the link allows; new messages are Buffered at
// once while they fit, then dropped and counted.
func (p *peer) stallIfStuck(now time.Time) {
	p.mu.Lock()
	if p.link == nil || p.stalled || p.brokerDown || p.inflight.len() == 0 || now.Sub(p.progress) < p.mesh.cfg.StallAfter {
		p.mu.Unlock()
		return
	}
	p.stalled = true
	dones := p.takeOwedLocked()
	held := p.held()
	p.mu.Unlock()
	p.pm.stalls.Inc()
	p.mesh.log.Warn("peer acknowledges nothing: treating it as down (its messages are buffered)",
		"peer", p.name, "for", now.Sub(p.progress).Round(time.Millisecond), "held", held)
	for _, done := range dones {
		done(Buffered)
	}
}

// expireIfGone discards the queue of a peer down longer than grace and
// reports its interest empty. It holds interestMu so that the empty set can
// never overtake a snapshot from a link that came up meanwhile.
func (p *peer) expireIfGone(now time.Time, grace time.Duration) {
	p.interestMu.Lock()
	defer p.interestMu.Unlock()
	p.mu.Lock()
	if p.link != nil || p.gone || p.closed || now.Sub(p.downSince) < grace {
		p.mu.Unlock()
		return
	}
	p.gone = true
	dones, n := p.discardLocked()
	p.mu.Unlock()
	p.mesh.log.Warn("peer gone: interest and queue discarded", "peer", p.name,
		"down_for", now.Sub(p.downSince).Round(time.Millisecond), "discarded", n)
	p.countDropped(dropGone, n)
	for _, done := range dones {
		done(Dropped)
	}
	if h := p.mesh.handlers.Interest; h != nil {
		h(p.name, InterestChange{Replace: true})
	}
}

// discardLocked empties the buffer, returning the outcomes still owed and
// the number of messages discarded.
func (p *peer) discardLocked() (dones []func(Outcome), n int) {
	p.requeueLocked()
	n = p.queue.len() + p.bulk.len()
	collect := func(it *item) {
		if it.done != nil {
			dones = append(dones, it.done)
		}
	}
	p.queue.each(collect)
	p.bulk.each(collect)
	p.queue.clear()
	p.bulk.clear()
	p.heldBytes, p.bulkHeld, p.bulkBytes = 0, 0, 0
	p.signalLocked()
	p.updateGaugesLocked()
	return dones, n
}

// shutdown closes the peer for good when the mesh stops: Sends fail with
// ErrClosed and messages whose outcome is still owed are Abandoned (the
// origin broker keeps them). Those reported Buffered earlier, for a peer
// that was down, were acknowledged: stopping loses them, counted.
func (p *peer) shutdown() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	dones, n := p.discardLocked()
	p.mu.Unlock()
	if lost := n - len(dones); lost > 0 {
		p.mesh.log.Warn("mesh stopped with messages buffered for a peer that was down: they are lost", "peer", p.name, "discarded", lost)
		p.countOnly(dropShutdown, lost)
	}
	for _, done := range dones {
		p.mesh.notify(done, Abandoned)
	}
}

// reportInterest passes a peer's interest change to the handler.
func (p *peer) reportInterest(ch InterestChange) {
	p.interestMu.Lock()
	defer p.interestMu.Unlock()
	if h := p.mesh.handlers.Interest; h != nil {
		h(p.name, ch)
	}
}

// PeerStatus is a snapshot of one peer link for /status.
type PeerStatus struct {
	Name         string    `json:"name"`
	Addr         string    `json:"addr"`
	Up           bool      `json:"up"`
	Since        time.Time `json:"since"`
	Epoch        uint64    `json:"epoch"`
	Queued       int       `json:"queued"`
	InFlight     int       `json:"in_flight"`
	SentMessages uint64    `json:"sent_messages"`
	SentBytes    uint64    `json:"sent_bytes"`
	RecvMessages uint64    `json:"recv_messages"`
	RecvBytes    uint64    `json:"recv_bytes"`
	Dropped      uint64    `json:"dropped"`
	Gone         bool      `json:"gone"`
	// Stalled: the link is up but the peer acknowledges nothing (its
	// broker hung): its messages are buffered as for a peer that is down.
	Stalled bool `json:"stalled"`
	// BrokerDown: the peer reports its broker sessions down; its messages
	// are buffered as for a peer that is down.
	BrokerDown bool `json:"broker_down"`
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	s := PeerStatus{
		Name: p.name, Addr: p.addr, Up: p.link != nil, Since: p.since, Epoch: p.epoch,
		Queued: p.queue.len() + p.bulk.len(), InFlight: p.inflight.len(), Gone: p.gone, Stalled: p.stalled, BrokerDown: p.brokerDown,
	}
	p.mu.Unlock()
	s.SentMessages = p.sentMessages.Load()
	s.SentBytes = p.sentBytes.Load()
	s.RecvMessages = p.recvMessages.Load()
	s.RecvBytes = p.recvBytes.Load()
	s.Dropped = p.dropped.Load()
	return s
}

// rateLimit lets one log line through per interval and counts the rest.
type rateLimit struct {
	last       time.Time
	suppressed int
}

const dropLogInterval = 10 * time.Second

func (r *rateLimit) allow(now time.Time, n int) (suppressed int, ok bool) {
	if now.Sub(r.last) < dropLogInterval {
		r.suppressed += n
		return 0, false
	}
	suppressed, r.suppressed, r.last = r.suppressed, 0, now
	return suppressed, true
}
