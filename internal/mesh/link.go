package mesh

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

var errReplaced = errors.New("cluster: link replaced by a newer connection")

// maxUnacked bounds how many received messages may wait for their broker
// acknowledgement; a peer sending beyond it ignores any sane window.
const maxUnacked = 1 << 20

// link is one authenticated connection to a peer: a reader and a writer
// goroutine, ended together through ctx's cancel cause.
type link struct {
	parent   context.Context // the mesh's: done when the mesh shuts down
	peer     *peer
	mesh     *Mesh
	conn     net.Conn
	br       *bufio.Reader
	ctx      context.Context
	cancel   context.CancelCauseFunc
	wake     chan struct{} // capacity 1: "the writer has something to look at"
	finished chan struct{} // closed once the link is fully torn down

	acks ackTracker

	sendSnapshot    atomic.Bool // the peer asked for a snapshot
	sendBroker      atomic.Bool // the local broker state is news to the peer
	requestSnapshot atomic.Bool // the reader saw a delta gap: ask the peer for a snapshot

	notesMu sync.Mutex
	notes   []ClientNote // CLIENT announcements waiting for the writer
	parts   []frame      // DIGEST and SESSIONS parts waiting for the writer, in order

	// reader-owned interest receive state
	recvVersion  uint64
	haveSnapshot bool
	awaitingSnap bool
	// reader-owned: SNAPSHOT and DIGEST parts received so far
	snapParts     []string
	digestParts   []DigestEntry
	sessionParts  []SessionNote
	sessionsWhole bool      // the SESSIONS being assembled replaces (its first part said so)
	inflate       *inflater // reader-owned: the peer's compressed stream, from its first compressed batch
}

// maxAssembled bounds what the parts of one SNAPSHOT or DIGEST may add up
// to: a peer claiming more is misbehaving.
const maxAssembled = 1 << 24

func newLink(ctx context.Context, p *peer, conn net.Conn, br *bufio.Reader) *link {
	l := &link{
		parent:   ctx,
		peer:     p,
		mesh:     p.mesh,
		conn:     conn,
		br:       br,
		wake:     make(chan struct{}, 1),
		finished: make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancelCause(ctx)
	l.sendSnapshot.Store(true) // every link starts with a full snapshot
	l.sendBroker.Store(true)   // and the local broker's state
	return l
}

func (l *link) wakeWriter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run serves the link until either loop fails or ctx ends, and returns the cause.
// The connection stays open until both loops returned, so the writer can
// send a last ACK on shutdown; deadlines unblock the loops meanwhile.
func (l *link) run() error {
	stop := context.AfterFunc(l.ctx, func() {
		_ = l.conn.SetReadDeadline(time.Now())
		_ = l.conn.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { l.cancel(l.readLoop()) })
	wg.Go(func() { l.cancel(l.writeLoop()) })
	wg.Wait()
	l.conn.Close()
	return context.Cause(l.ctx)
}

func (l *link) deadAfter() time.Duration { return 3 * l.mesh.cfg.Heartbeat }

func (l *link) readLoop() error {
	for {
		if err := l.conn.SetReadDeadline(time.Now().Add(l.deadAfter())); err != nil {
			return fmt.Errorf("set read deadline: %w", err)
		}
		// Checked after setting the deadline: ending the link moves the
		// deadline to now, and must not be overwritten unnoticed.
		if err := l.ctx.Err(); err != nil {
			return context.Cause(l.ctx)
		}
		typ, body, err := readFrame(l.br, maxFrameSize)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		l.peer.heard.Store(time.Now().UnixNano())
		if typ == framePublishBatchZ {
			if l.inflate == nil {
				l.inflate = newInflater()
			}
			if body, err = l.inflate.batch(body); err != nil {
				return err
			}
			typ = framePublishBatch
		}
		f, err := decodeFrame(typ, body)
		if err != nil {
			return err
		}
		if err := l.handle(&f); err != nil {
			return err
		}
	}
}

func (l *link) handle(f *frame) error {
	switch f.typ {
	case frameSnapshot:
		if len(l.snapParts)+len(f.filters) > maxAssembled {
			return fmt.Errorf("%w: a snapshot of more than %d filters", ErrProtocol, maxAssembled)
		}
		l.snapParts = append(l.snapParts, f.filters...)
		if f.more {
			return nil
		}
		l.peer.reportInterest(InterestChange{Replace: true, Added: l.snapParts})
		l.snapParts = nil
		l.recvVersion, l.haveSnapshot, l.awaitingSnap = f.version, true, false
	case frameDelta:
		l.handleDelta(f)
	case frameSnapshotRequest:
		l.sendSnapshot.Store(true)
		l.wakeWriter()
	case framePublishBatch:
		return l.deliver(f)
	case frameAck:
		return l.peer.ack(l, f.upTo)
	case frameClient:
		if h := l.mesh.handlers.Client; h != nil {
			h(l.peer.name, f.client)
		}
	case frameDigest:
		if len(l.digestParts)+len(f.digest) > maxAssembled {
			return fmt.Errorf("%w: a digest of more than %d entries", ErrProtocol, maxAssembled)
		}
		l.digestParts = append(l.digestParts, f.digest...)
		if f.more {
			return nil
		}
		if h := l.mesh.handlers.Digest; h != nil {
			h(l.peer.name, l.digestParts)
		}
		l.digestParts = nil
	case frameBroker:
		l.peer.setBrokerState(l, f.brokerUp)
	case frameSessions:
		return l.handleSessions(f)
	case frameHeartbeat:
	}
	return nil
}

// announce queues a CLIENT frame for the writer.
func (l *link) announce(n ClientNote) {
	l.notesMu.Lock()
	l.notes = append(l.notes, n)
	l.notesMu.Unlock()
	l.wakeWriter()
}

// handleSessions assembles a SESSIONS message's parts and reports it.
func (l *link) handleSessions(f *frame) error {
	if len(l.sessionParts)+len(f.sessions.Notes) > maxAssembled {
		return fmt.Errorf("%w: sessions of more than %d entries", ErrProtocol, maxAssembled)
	}
	if len(l.sessionParts) == 0 {
		l.sessionsWhole = f.sessions.Replace
	}
	l.sessionParts = append(l.sessionParts, f.sessions.Notes...)
	if f.more {
		return nil
	}
	if h := l.mesh.handlers.Sessions; h != nil {
		h(l.peer.name, SessionChange{Replace: l.sessionsWhole, Notes: l.sessionParts})
	}
	l.sessionParts, l.sessionsWhole = nil, false
	return nil
}

// takeNotes returns the queued announcements and the next DIGEST or
// SESSIONS part: one part per call, so that messages go out between the
// parts.
func (l *link) takeNotes() ([]ClientNote, *frame) {
	l.notesMu.Lock()
	defer l.notesMu.Unlock()
	n := l.notes
	l.notes = nil
	if len(l.parts) == 0 {
		return n, nil
	}
	d := l.parts[0]
	l.parts = l.parts[1:]
	if len(l.parts) > 0 {
		l.wakeWriter() // the next part, after what else is ready
	}
	return n, &d
}

// sendDigest queues a DIGEST for the writer, in parts.
func (l *link) sendDigest(entries []DigestEntry) {
	l.notesMu.Lock()
	for {
		n := partLen(entries, func(e DigestEntry) int { return len(e.Topic) + 22 })
		l.parts = append(l.parts, frame{typ: frameDigest, digest: entries[:n], more: n < len(entries)})
		entries = entries[n:]
		if len(entries) == 0 {
			break
		}
	}
	l.notesMu.Unlock()
	l.wakeWriter()
}

// sendSessions queues a SESSIONS message for the writer, in parts.
func (l *link) sendSessions(ch SessionChange) {
	notes := ch.Notes
	l.notesMu.Lock()
	for {
		n := partLen(notes, noteSize)
		part := SessionChange{Replace: ch.Replace, Notes: notes[:n]}
		l.parts = append(l.parts, frame{typ: frameSessions, sessions: part, more: n < len(notes)})
		notes = notes[n:]
		if len(notes) == 0 {
			break
		}
	}
	l.notesMu.Unlock()
	l.wakeWriter()
}

// handleDelta applies a delta in sequence; on a gap it asks for a snapshot
// once and ignores deltas until the snapshot arrives.
func (l *link) handleDelta(f *frame) {
	if l.awaitingSnap {
		return
	}
	if !l.haveSnapshot || f.version != l.recvVersion+1 {
		l.mesh.log.Info("interest delta out of sequence: requesting snapshot", "peer", l.peer.name,
			"have", l.recvVersion, "got", f.version)
		l.awaitingSnap = true
		l.requestSnapshot.Store(true)
		l.wakeWriter()
		return
	}
	l.peer.reportInterest(InterestChange{Added: f.filters, Removed: f.removed, At: f.at})
	l.recvVersion = f.version
}

// deliver hands a batch to the broker side in order. Acks for it are
// coalesced: the writer is woken once, after the whole batch.
func (l *link) deliver(f *frame) error {
	if err := l.acks.receive(f.firstSeq, len(f.msgs)); err != nil {
		return err
	}
	deliverFn := l.mesh.handlers.Deliver
	for i := range f.msgs {
		seq := f.firstSeq + uint64(i)
		ack := func() {
			if l.acks.complete(seq) {
				l.wakeWriter()
			}
		}
		if deliverFn == nil {
			ack()
			continue
		}
		deliverFn(l.peer.name, f.msgs[i], ack)
	}
	n := uint64(len(f.msgs))
	l.peer.recvMessages.Add(n)
	l.peer.pm.recvMessages.Add(float64(n))
	if l.acks.endBatch() {
		l.wakeWriter()
	}
	return nil
}

// writer is the writer goroutine's state.
type writer struct {
	l        *link
	bw       *bufio.Writer
	scratch  []byte // frame body being encoded
	frames   []byte // interest frames
	batch    []item
	sentAck  uint64
	interest uint64    // local interest version the peer has
	ackDue   bool      // the ack delay ran out: send what is completed
	deflate  *deflater // with Config.Compress: this link's compressed stream
	zbody    []byte    // a compressed batch's frame body
}

// finalWriteTimeout bounds the last ACK a link sends when the mesh shuts
// down, and any write still blocked when a link ends.
const finalWriteTimeout = 200 * time.Millisecond

func (l *link) writeLoop() error {
	w := &writer{l: l, bw: bufio.NewWriterSize(l.conn, 64<<10)}
	heartbeat := l.mesh.cfg.Heartbeat
	idle := time.NewTimer(heartbeat)
	defer idle.Stop()
	ackDelay := l.mesh.cfg.AckDelay
	ackTimer := time.NewTimer(ackDelay)
	ackTimer.Stop()
	defer ackTimer.Stop()
	ackArmed := false
	for {
		wrote, err := w.writeReady()
		if err != nil {
			return err
		}
		if wrote {
			if err := w.flush(); err != nil {
				return err
			}
			idle.Reset(heartbeat)
			continue // more may have become ready meanwhile
		}
		if !ackArmed && l.acks.completed() > w.sentAck {
			ackTimer.Reset(ackDelay)
			ackArmed = true
		}
		select {
		case <-l.ctx.Done():
			w.finalAck()
			return context.Cause(l.ctx)
		case <-ackTimer.C:
			ackArmed = false
			w.ackDue = true
		case <-l.wake:
		case <-idle.C:
			w.writeFrame(frameHeartbeat, nil)
			if err := w.flush(); err != nil {
				return err
			}
			idle.Reset(heartbeat)
		}
	}
}

// finalAck tells the peer, when the mesh shuts down, which of its messages
// the broker already accepted: without it the peer would send them again
// to whoever runs next (duplicates). A link ended for any other reason
// (replaced, broken) sends nothing more.
func (w *writer) finalAck() {
	l := w.l
	if l.parent.Err() == nil || l.acks.completed() <= w.sentAck {
		return
	}
	w.writeAck()
	_ = w.flushWithin(finalWriteTimeout)
}

func (w *writer) flush() error { return w.flushWithin(w.l.deadAfter()) }

// flushWithin writes what is buffered, giving up after d.
func (w *writer) flushWithin(d time.Duration) error {
	if err := w.l.conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// writeReady writes everything that is ready: interest, a snapshot
// request, message batches while the window allows, and one coalesced ACK
// (see ackDelay). Errors from bw surface at flush.
func (w *writer) writeReady() (wrote bool, err error) {
	l := w.l
	w.frames, w.scratch = l.mesh.interest.appendFrames(w.frames[:0], &w.interest, l.sendSnapshot.Swap(false), w.scratch)
	if len(w.frames) > 0 {
		w.bw.Write(w.frames)
		wrote = true
	}
	if l.requestSnapshot.Swap(false) {
		w.writeFrame(frameSnapshotRequest, nil)
		wrote = true
	}
	if l.sendBroker.Swap(false) {
		f := frame{typ: frameBroker, brokerUp: !l.mesh.brokerDown.Load()}
		w.scratch = encodeFrameBody(w.scratch[:0], &f)
		w.writeFrame(frameBroker, w.scratch)
		wrote = true
	}
	notes, part := l.takeNotes()
	for _, n := range notes {
		f := frame{typ: frameClient, client: n}
		w.scratch = encodeFrameBody(w.scratch[:0], &f)
		w.writeFrame(frameClient, w.scratch)
		wrote = true
	}
	if part != nil {
		w.scratch = encodeFrameBody(w.scratch[:0], part)
		w.writeFrame(part.typ, w.scratch)
		wrote = true
	}
	for {
		var firstSeq uint64
		firstSeq, w.batch = l.peer.takeBatch(l, w.batch[:0])
		if len(w.batch) == 0 {
			break
		}
		if err := w.writeBatch(firstSeq); err != nil {
			return wrote, err
		}
		wrote = true
		// Under sustained load the writer is never idle: ack often enough
		// that the peer's window does not stall on us.
		if l.acks.completed()-w.sentAck >= uint64(l.mesh.cfg.Window/2) {
			w.writeAck()
		}
	}
	// An ACK rides along with anything written; alone it waits for
	// ackDelay, or until a quarter of the peer's window waits on it.
	pending := l.acks.completed() - w.sentAck
	if pending > 0 && (wrote || w.ackDue || pending >= uint64(l.mesh.cfg.Window/4)) {
		w.writeAck()
		wrote = true
	}
	w.ackDue = false
	return wrote, nil
}

// writeFrame writes length | type | body. bufio.Writer errors are sticky
// and reported by the next flush.
func (w *writer) writeFrame(typ byte, body []byte) {
	var hdr [binary.MaxVarintLen64 + 1]byte
	n := binary.PutUvarint(hdr[:], uint64(len(body)+1))
	hdr[n] = typ
	w.bw.Write(hdr[:n+1])
	w.bw.Write(body)
}

func (w *writer) writeBatch(firstSeq uint64) error {
	w.scratch = binary.AppendUvarint(w.scratch[:0], firstSeq)
	w.scratch = binary.AppendUvarint(w.scratch, uint64(len(w.batch)))
	for i := range w.batch {
		w.scratch = appendMessage(w.scratch, &w.batch[i].msg)
	}
	if err := w.writeBatchFrame(); err != nil {
		return err
	}
	p := w.l.peer
	n := uint64(len(w.batch))
	p.sentMessages.Add(n)
	p.batchesSent.Add(1)
	p.pm.fwdMessages.Add(float64(n))
	clear(w.batch) // do not keep payloads alive until the next batch
	return nil
}

// writeBatchFrame writes the encoded batch in w.scratch, compressed on the
// link's stream when the mesh compresses. A compressor that fails ends the
// link (the next one starts a fresh stream); the batch is resent on it.
func (w *writer) writeBatchFrame() error {
	if !w.l.mesh.cfg.Compress {
		w.writeFrame(framePublishBatch, w.scratch)
		return nil
	}
	if w.deflate == nil {
		w.deflate = newDeflater()
	}
	z, err := w.deflate.appendBatch(w.zbody[:0], w.scratch)
	if err != nil {
		return err
	}
	w.zbody = z
	w.writeFrame(framePublishBatchZ, z)
	return nil
}

func (w *writer) writeAck() {
	upTo := w.l.acks.completed()
	w.scratch = binary.AppendUvarint(w.scratch[:0], upTo)
	w.writeFrame(frameAck, w.scratch)
	w.sentAck = upTo
	w.l.peer.ackFramesSent.Add(1)
	w.l.peer.pm.ackFrames.Inc()
}

// ackTracker turns acknowledgements that arrive in any order into a
// cumulative "everything up to base was accepted".
type ackTracker struct {
	mu         sync.Mutex
	base       uint64 // every seq <= base is complete
	received   uint64 // highest seq delivered
	done       fifo[bool]
	delivering bool // inside a batch: the reader wakes the writer at its end
	advanced   bool // base moved while delivering
}

// receive registers a batch of n messages starting at firstSeq, which must
// follow the previous batch.
func (t *ackTracker) receive(firstSeq uint64, n int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if firstSeq != t.received+1 {
		return fmt.Errorf("%w: batch starts at seq %d, expected %d", ErrProtocol, firstSeq, t.received+1)
	}
	if t.received+uint64(n)-t.base > maxUnacked {
		return fmt.Errorf("%w: more than %d messages unacknowledged", ErrProtocol, maxUnacked)
	}
	for range n {
		t.done.push(false)
	}
	t.received += uint64(n)
	t.delivering = true
	return nil
}

// complete marks seq accepted; it reports whether the writer should be
// woken (base moved and no batch is being delivered). Repeats are ignored.
func (t *ackTracker) complete(seq uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.base || seq > t.received {
		return false
	}
	*t.done.at(int(seq - t.base - 1)) = true
	moved := false
	for t.done.len() > 0 && *t.done.peek() {
		t.done.pop()
		t.base++
		moved = true
	}
	if t.delivering {
		t.advanced = t.advanced || moved
		return false
	}
	return moved
}

// endBatch ends a delivery and reports whether base moved during it.
func (t *ackTracker) endBatch() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	moved := t.advanced
	t.delivering, t.advanced = false, false
	return moved
}

func (t *ackTracker) completed() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.base
}

// countingConn counts the bytes a link moves, for its peer.
type countingConn struct {
	net.Conn
	peer atomic.Pointer[peer] // nil until the handshake named the peer
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if p := c.peer.Load(); p != nil && n > 0 {
		p.recvBytes.Add(uint64(n))
		p.pm.bytesRead.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if p := c.peer.Load(); p != nil && n > 0 {
		p.sentBytes.Add(uint64(n))
		p.pm.fwdBytes.Add(float64(n))
	}
	return n, err
}
