package mesh

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// Handlers are the mesh's calls into the agent.
type Handlers struct {
	// Deliver is called for each message a peer forwarded, in the order that
	// peer sent them, from that link's reader goroutine; it must not block.
	// ack must be called exactly once when the local broker accepted the
	// republish (QoS 0: when written); acks may come from any goroutine, in
	// any order. The message's slices may alias a shared frame buffer: they
	// are never modified by the mesh. Nil: messages are acked and discarded.
	Deliver func(peer string, m message.Message, ack func())
	// Interest reports a change of a peer's advertised filters. Called from
	// mesh goroutines, never concurrently for one peer, in order. Optional.
	Interest func(peer string, ch InterestChange)
	// LinkState is called when a peer's link goes up or down. Optional.
	LinkState func(peer string, up bool)
	// Client reports a peer's CLIENT announcement (a client connected
	// there). Called from that link's reader goroutine; must not block.
	// Optional.
	Client func(peer string, n ClientNote)
	// Digest reports a peer's DIGEST of its retained messages. Called from
	// that link's reader goroutine; must not block. Optional.
	Digest func(peer string, entries []DigestEntry)
	// Sessions reports a peer's SESSIONS: the persistent sessions it wants
	// replicated here. Called from that link's reader goroutine; must not
	// block. Optional.
	Sessions func(peer string, ch SessionChange)
}

// InterestChange is one change of a peer's advertised filters.
type InterestChange struct {
	// Replace: Added is the complete set (a snapshot; also sent with an
	// empty set when the peer is gone past InterestGrace). Otherwise apply
	// Added and Removed.
	Replace        bool
	Added, Removed []string
	// At is when the peer's interest changed, on its clock (unix nanos),
	// for a delta; 0 for a snapshot.
	At int64
}

// Sentinel errors.
var (
	ErrClosed = errors.New("cluster: mesh closed")
	// ErrPeerDown: SendWait refuses a bulk message for a peer whose link
	// is down.
	ErrPeerDown = errors.New("cluster: peer link down")
	ErrRunning  = errors.New("cluster: mesh already running")
)

const (
	// A peer's handshake is a couple of round trips; an unauthenticated
	// connection gets no more than this to complete it.
	handshakeTimeout       = 2 * time.Second
	maxPendingHandshakes   = 256
	defaultJanitorInterval = time.Second
)

// Mesh is this node's set of links to its peers.
type Mesh struct {
	cfg      Config
	handlers Handlers
	log      *slog.Logger
	metrics  *metrics
	epoch    uint64
	hs       *handshaker
	peers    map[string]*peer
	names    []string
	interest localInterest
	notes    notifier
	ready    chan struct{}
	runDone  chan struct{}

	handshakeTimeout time.Duration         // a field so tests can shorten it
	pending          pendingHandshakes     // unauthenticated connections
	rejectLogs       map[string]*rateLimit // per reason, under mu

	mu         sync.Mutex
	addr       net.Addr
	unknownLog rateLimit
	running    bool
	closed     bool
	// stopping: Run's context ended, links end because the mesh stops.
	stopping atomic.Bool
	// brokerDown: the local broker sessions are down (SetBrokerUp): peers
	// are told, and buffer for this node instead of waiting on it.
	brokerDown atomic.Bool
	cancel     context.CancelCauseFunc
}

// New validates cfg (every problem reported, one line per field), applies
// the defaults and registers the metrics. Nothing runs until Run.
func New(cfg Config, h Handlers) (*Mesh, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	met := newMetrics(cfg.Registerer)
	var epoch [8]byte
	if _, err := crand.Read(epoch[:]); err != nil {
		return nil, fmt.Errorf("cluster: epoch: %w", err)
	}
	m := &Mesh{
		cfg:              cfg,
		handlers:         h,
		log:              cfg.Logger, // the caller's logger names the node
		metrics:          met,
		epoch:            binary.BigEndian.Uint64(epoch[:]),
		peers:            make(map[string]*peer, len(cfg.Peers)),
		names:            sortedKeys(cfg.Peers),
		notes:            newNotifier(),
		ready:            make(chan struct{}),
		runDone:          make(chan struct{}),
		handshakeTimeout: handshakeTimeout,
		pending:          pendingHandshakes{max: maxPendingHandshakes},
		rejectLogs:       map[string]*rateLimit{},
	}
	m.interest.recent = cfg.RecentInterest
	for _, name := range m.names {
		m.peers[name] = newPeer(m, name, cfg.Peers[name])
	}
	m.hs = &handshaker{node: cfg.Node, epoch: m.epoch, secret: cfg.Secret, known: m.mayDialUs}
	return m, nil
}

// mayDialUs: only configured peers whose name sorts lower dial this node.
func (m *Mesh) mayDialUs(name string) bool {
	p := m.peers[name]
	return p != nil && !p.dials
}

// Run listens, dials the peers whose names sort higher than this node's,
// and serves every link until ctx is done or Close is called; then it
// closes the links, waits for every goroutine, reports Dropped for messages
// whose outcome is still owed, and returns nil. A listen failure is
// returned at once. Run may be called once.
func (m *Mesh) Run(ctx context.Context) error {
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrClosed
	case m.running:
		m.mu.Unlock()
		return ErrRunning
	}
	m.running = true
	ctx, cancel := context.WithCancelCause(ctx)
	m.cancel = cancel
	m.mu.Unlock()
	ctx = stopFirst(ctx, &m.stopping)
	defer close(m.runDone)
	defer cancel(nil)

	notesDone := make(chan struct{})
	go func() { defer close(notesDone); m.notes.run() }()
	defer func() { m.notes.stop(); <-notesDone }()
	defer m.shutdownPeers()

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cluster: listen %s: %w", m.cfg.Listen, err)
	}
	m.mu.Lock()
	m.addr = ln.Addr()
	m.mu.Unlock()
	close(m.ready)
	m.log.Info("cluster listening", "addr", ln.Addr().String(), "peers", len(m.peers))
	m.serve(ctx, ln)
	return nil
}

// serve runs every mesh goroutine and waits for all of them after ctx ends.
func (m *Mesh) serve(ctx context.Context, ln net.Listener) {
	start := time.Now()
	for _, p := range m.peers {
		p.mu.Lock()
		p.since, p.downSince = start, start
		p.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() { m.acceptLoop(ctx, ln, &wg) })
	wg.Go(func() { m.janitor(ctx) })
	for _, p := range m.peers {
		if p.dials {
			wg.Go(func() { m.dialLoop(ctx, p) })
		}
	}
	<-ctx.Done()
	ln.Close()
	wg.Wait()
}

// stopFirst returns a context that ends after stopping is set, once ctx
// ends: every goroutine that sees it done also sees the mesh stopping.
func stopFirst(ctx context.Context, stopping *atomic.Bool) context.Context {
	inner, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() {
		stopping.Store(true)
		cancel(context.Cause(ctx))
	})
	return inner
}

func (m *Mesh) shutdownPeers() {
	for _, name := range m.names {
		m.peers[name].shutdown()
	}
}

// Ready is closed once Run is listening; Addr is valid from then on. A
// caller that must also see a listen failure selects on Ready and on Run
// returning.
func (m *Mesh) Ready() <-chan struct{} { return m.ready }

// Addr is the bound listen address, nil before Ready is closed.
func (m *Mesh) Addr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// Close stops Run (if it runs) and waits for it to return. Safe to call
// twice, and before Run (which then returns ErrClosed). It must not be
// called from a handler or a done callback.
func (m *Mesh) Close() error {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	running, cancel := m.running, m.cancel
	m.mu.Unlock()
	if running {
		cancel(ErrClosed)
		<-m.runDone
		return nil
	}
	if !already {
		m.shutdownPeers()
		m.notes.stop()
		m.notes.run() // no Run will deliver what Sends posted: do it here
	}
	return nil
}

// Peers returns the configured peer names, sorted.
func (m *Mesh) Peers() []string { return append([]string(nil), m.names...) }

// Status returns one entry per peer, sorted by name.
func (m *Mesh) Status() []PeerStatus {
	out := make([]PeerStatus, 0, len(m.names))
	for _, name := range m.names {
		out = append(out, m.peers[name].status())
	}
	return out
}

// Advertise records a change of this node's interest and sends it to every
// connected peer as a numbered delta; every new link starts with a full
// snapshot of the current set. It never blocks on the network.
func (m *Mesh) Advertise(added, removed []string) {
	if !m.interest.apply(added, removed) {
		return
	}
	m.eachLink(func(l *link) { l.wakeWriter() })
}

// eachLink calls f with every peer's current link (peers whose link is
// down are skipped).
func (m *Mesh) eachLink(f func(*link)) {
	for name := range m.peers {
		if l := m.linkOf(name); l != nil {
			f(l)
		}
	}
}

// SetBrokerUp records whether the local broker sessions are up and tells
// every peer on a change (a BROKER frame; every link also starts with one).
// A mesh starts up; an agent sets it down until its broker sessions are up.
func (m *Mesh) SetBrokerUp(up bool) {
	if m.brokerDown.Swap(!up) == !up {
		return
	}
	m.eachLink(func(l *link) {
		l.sendBroker.Store(true)
		l.wakeWriter()
	})
}

// AnnounceClient tells every connected peer that a client connected here.
// Peers whose link is down do not get it (it would be stale on return).
func (m *Mesh) AnnounceClient(n ClientNote) {
	m.eachLink(func(l *link) { l.announce(n) })
}

// AnnounceClientTo sends peer CLIENT announcements again (call it from
// LinkState): what it missed while its link was down.
func (m *Mesh) AnnounceClientTo(peer string, notes []ClientNote) {
	l := m.linkOf(peer)
	if l == nil {
		return
	}
	for _, n := range notes {
		l.announce(n)
	}
}

// SendDigest sends peer a DIGEST of this node's retained messages if its
// link is up (call it from LinkState). It reports whether it was queued.
func (m *Mesh) SendDigest(peer string, entries []DigestEntry) bool {
	l := m.linkOf(peer)
	if l == nil {
		return false
	}
	l.sendDigest(entries)
	return true
}

// LastHeard returns when a frame last arrived from peer on its current
// link, or the zero time while the link is down (or the peer unknown). A
// live link carries a heartbeat at least every Config.Heartbeat; a peer
// that died is only noticed three heartbeats later, so "the link is up"
// says less than this does.
func (m *Mesh) LastHeard(peer string) time.Time {
	p := m.peers[peer]
	if p == nil || m.linkOf(peer) == nil {
		return time.Time{}
	}
	return time.Unix(0, p.heard.Load())
}

// linkOf returns peer's current link; nil when it is down or unknown.
func (m *Mesh) linkOf(peer string) *link {
	p := m.peers[peer]
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.link
}

// SendSessions sends peer a SESSIONS message if its link is up (call it
// from LinkState for a Replace). It reports whether it was queued: one
// that was not is for a later link's Replace to carry.
func (m *Mesh) SendSessions(peer string, ch SessionChange) bool {
	l := m.linkOf(peer)
	if l == nil {
		return false
	}
	l.sendSessions(ch)
	return true
}

// Send queues msg for peer; the mesh owns msg's slices from now on.
// done(outcome) is called exactly once, from a mesh goroutine, and must not
// block: Acked when the peer acknowledged it; Buffered as soon as it is
// queued while the peer's link is down (or when the link goes down with it
// unacknowledged: it stays queued and is resent when the link returns);
// Dropped when the peer's buffer is over its limits (its link down, or up
// but the peer not keeping up: one slow peer never holds up the others),
// the peer is gone or unknown, or the message cannot fit a frame;
// Abandoned when the mesh stops before the peer took it. Send never
// blocks. After the mesh stopped it returns ErrClosed without calling done.
// done may be nil.
func (m *Mesh) Send(ctx context.Context, peerName string, msg message.Message, done func(Outcome)) error {
	return m.send(ctx, peerName, msg, done, false)
}

// SendWait is Send for a bulk transfer with a goroutine of its own (a
// retained sync). Bulk messages have a buffer of their own and go out only
// when no live message waits, a bounded number in flight at a time: live
// traffic never waits behind a bulk transfer. When that buffer is full,
// SendWait waits for room or for ctx to end (then it returns ctx.Err()
// without calling done) instead of dropping. While the peer's link is down
// it returns ErrPeerDown without calling done.
func (m *Mesh) SendWait(ctx context.Context, peerName string, msg message.Message, done func(Outcome)) error {
	return m.send(ctx, peerName, msg, done, true)
}

func (m *Mesh) send(ctx context.Context, peerName string, msg message.Message, done func(Outcome), bulk bool) error {
	p := m.peers[peerName]
	if p == nil {
		m.mu.Lock()
		suppressed, ok := m.unknownLog.allow(time.Now(), 1)
		m.mu.Unlock()
		if ok {
			m.log.Warn("dropping message for unknown peer", "peer", peerName, "topic", msg.Topic, "suppressed", suppressed)
		}
		m.notify(done, Dropped)
		return nil
	}
	it := item{msg: msg, done: done, size: msg.Size(), bulk: bulk}
	if encodedSize(&msg)+64 > maxFrameSize || len(msg.Props.User) > maxBatchUserProps {
		p.drop(it, dropTooLarge)
		return nil
	}
	for {
		retry, err := p.enqueue(it)
		if retry == nil {
			return err
		}
		select {
		case <-retry:
			p.stopWaiting()
		case <-ctx.Done():
			p.stopWaiting()
			return ctx.Err()
		}
	}
}

// notify reports an outcome from the notifier goroutine, never from the
// caller's own goroutine (which may hold locks the callback needs).
func (m *Mesh) notify(done func(Outcome), o Outcome) {
	if done != nil {
		m.notes.post(func() { done(o) })
	}
}

// janitor declares peers gone once they were down for InterestGrace.
func (m *Mesh) janitor(ctx context.Context) {
	grace := m.cfg.InterestGrace
	tick := min(max(min(grace, m.cfg.StallAfter)/10, 5*time.Millisecond), defaultJanitorInterval)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, name := range m.names {
				m.peers[name].expireIfGone(now, grace)
				m.peers[name].stallIfStuck(now)
			}
		}
	}
}

// acceptLoop accepts peer connections; each handshake runs in its own
// goroutine owned by wg (at most maxPendingHandshakes at once: a new one
// evicts the oldest).
func (m *Mesh) acceptLoop(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("accept failed", "err", err)
			if !sleepCtx(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		pc := m.pending.add(conn)
		wg.Go(func() { m.acceptConn(ctx, pc) })
	}
}

func (m *Mesh) acceptConn(ctx context.Context, pc *pendingConn) {
	raw := pc.conn
	cc := &countingConn{Conn: raw}
	conn, br, theirs, err := m.handshakeAccept(ctx, cc)
	if m.pending.done(pc) {
		err = reject(reasonBusy, "evicted by newer connections while authenticating")
	}
	if err != nil {
		raw.Close()
		if ctx.Err() == nil {
			m.rejected(raw.RemoteAddr(), err)
		}
		return
	}
	p := m.peers[theirs.node]
	cc.peer.Store(p)
	m.serveLink(ctx, p, conn, br, theirs)
}

// handshakeAccept runs TLS (if configured) and the acceptor's handshake
// under the handshake deadline.
func (m *Mesh) handshakeAccept(ctx context.Context, raw net.Conn) (net.Conn, *bufio.Reader, hello, error) {
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	conn := raw
	if err := conn.SetDeadline(time.Now().Add(m.handshakeTimeout)); err != nil {
		return nil, nil, hello{}, err
	}
	var tc *tls.Conn
	if m.cfg.ServerTLS != nil {
		tc = tls.Server(raw, m.cfg.ServerTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, hello{}, &rejectError{reason: reasonTLS, err: err}
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	theirs, err := m.hs.accept(conn, br)
	if err != nil {
		return nil, nil, hello{}, err
	}
	if tc != nil && m.cfg.ServerTLS.ClientAuth == tls.RequireAndVerifyClientCert {
		if err := m.checkIdentity(tc.ConnectionState(), theirs.node); err != nil {
			return nil, nil, hello{}, &rejectError{reason: reasonTLSIdentity, err: err}
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, nil, hello{}, err
	}
	return conn, br, theirs, nil
}

// rejected counts a refused connection and logs it, at most one line per
// reason every 10 s (with how many were not logged): a flood of bad
// connections must not flood the log.
func (m *Mesh) rejected(remote net.Addr, err error) {
	reason := rejectReason(err)
	m.metrics.rejected.WithLabelValues(reason).Inc()
	m.mu.Lock()
	rl := m.rejectLogs[reason]
	if rl == nil {
		rl = &rateLimit{}
		m.rejectLogs[reason] = rl
	}
	suppressed, ok := rl.allow(time.Now(), 1)
	m.mu.Unlock()
	if ok {
		m.log.Warn("peer connection rejected", "remote", remote.String(), "reason", reason, "err", err, "suppressed", suppressed)
	}
}

// dialLoop keeps a link to p up: dial, serve until the link ends, back off
// (capped exponential with jitter), repeat until ctx ends.
func (m *Mesh) dialLoop(ctx context.Context, p *peer) {
	backoff := m.cfg.BackoffMin
	failures := 0
	for {
		err := m.dialAndServe(ctx, p)
		if ctx.Err() != nil {
			return
		}
		var he *handshakeError
		switch {
		case errors.As(err, &he):
			failures++
			m.rejected(he.remote, he.err)
		case err != nil:
			failures++
			level := slog.LevelDebug
			if failures == 1 {
				level = slog.LevelInfo
			}
			m.log.Log(ctx, level, "dial peer failed", "peer", p.name, "addr", p.addr, "attempt", failures, "err", err)
		default:
			failures, backoff = 0, m.cfg.BackoffMin
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, m.cfg.BackoffMax)
	}
}

// dialAndServe dials p once and, if the handshake succeeds, serves the
// link until it ends (returning nil). A failed handshake is a *handshakeError.
func (m *Mesh) dialAndServe(ctx context.Context, p *peer) error {
	d := net.Dialer{Timeout: m.handshakeTimeout}
	raw, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return fmt.Errorf("dial peer %s: %w", p.addr, err)
	}
	cc := &countingConn{Conn: raw}
	conn, br, theirs, err := m.handshakeDial(ctx, cc, p)
	if err != nil {
		raw.Close()
		return &handshakeError{remote: raw.RemoteAddr(), err: err}
	}
	cc.peer.Store(p)
	m.serveLink(ctx, p, conn, br, theirs)
	return nil
}

func (m *Mesh) handshakeDial(ctx context.Context, raw net.Conn, p *peer) (net.Conn, *bufio.Reader, hello, error) {
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	conn := raw
	if err := conn.SetDeadline(time.Now().Add(m.handshakeTimeout)); err != nil {
		return nil, nil, hello{}, err
	}
	if m.cfg.ClientTLS != nil {
		tc := tls.Client(raw, m.dialTLS(p))
		if err := tc.HandshakeContext(ctx); err != nil {
			reason := reasonTLS
			if errors.As(err, new(*identityError)) {
				reason = reasonTLSIdentity
			}
			return nil, nil, hello{}, &rejectError{reason: reason, err: err}
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	theirs, err := m.hs.dial(conn, br, p.name)
	if err != nil {
		return nil, nil, hello{}, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, nil, hello{}, err
	}
	return conn, br, theirs, nil
}

// dialTLS is the client TLS config for dialing p: the peer's certificate
// must chain to the link CA (and name server_name, when one is set), and
// name p itself — by its node name or the host of its cluster address — so
// that one node's key cannot pose as another node.
func (m *Mesh) dialTLS(p *peer) *tls.Config {
	cfg := m.cfg.ClientTLS.Clone()
	if cfg.InsecureSkipVerify {
		return cfg // testing only: no verification at all
	}
	roots, serverName := cfg.RootCAs, cfg.ServerName
	// Verified in VerifyConnection instead: the name to check is the
	// peer's identity, which Go's single ServerName cannot express.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), DNSName: serverName}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return err
		}
		return m.checkIdentity(cs, p.name)
	}
	return cfg
}

// identityError is a valid certificate that does not name the node it
// came from.
type identityError struct {
	node  string
	names []string
}

func (e *identityError) Error() string {
	return fmt.Sprintf("certificate does not name node %s (by name or cluster address: %s)", e.node, strings.Join(e.names, ", "))
}

// checkIdentity reports whether the peer certificate in cs names node:
// its node name or the host of its configured cluster address, as a DNS or
// IP subject alternative name.
func (m *Mesh) checkIdentity(cs tls.ConnectionState, node string) error {
	names := []string{node}
	if p := m.peers[node]; p != nil {
		if host, _, err := net.SplitHostPort(p.addr); err == nil && host != node {
			names = append(names, host)
		}
	}
	if len(cs.PeerCertificates) > 0 {
		for _, n := range names {
			if cs.PeerCertificates[0].VerifyHostname(n) == nil {
				return nil
			}
		}
	}
	return &identityError{node: node, names: names}
}

// serveLink installs an authenticated connection as p's link and serves it
// until it ends.
func (m *Mesh) serveLink(ctx context.Context, p *peer, conn net.Conn, br *bufio.Reader, theirs hello) {
	l := newLink(ctx, p, conn, br)
	p.install(l, theirs.epoch)
	m.log.Info("link up", "peer", p.name, "remote", conn.RemoteAddr().String(), "epoch", theirs.epoch)
	cause := l.run()
	p.detach(l)
	close(l.finished)
	if ctx.Err() == nil {
		m.log.Info("link down", "peer", p.name, "err", cause)
	}
}

// handshakeError is a dialed connection refused during the handshake (by
// either side); the dial loop logs and counts it once.
type handshakeError struct {
	remote net.Addr
	err    error
}

func (e *handshakeError) Error() string {
	return "handshake with " + e.remote.String() + ": " + e.err.Error()
}
func (e *handshakeError) Unwrap() error { return e.err }

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// notifier runs done callbacks on its own goroutine, in the order posted,
// so Send never calls back into its caller's goroutine.
type notifier struct {
	mu      sync.Mutex
	queue   []func()
	wake    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func newNotifier() notifier {
	return notifier{wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

func (n *notifier) post(f func()) {
	n.mu.Lock()
	n.queue = append(n.queue, f)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) stop() { n.once.Do(func() { close(n.stopped) }) }

// run calls posted callbacks until stopped, then drains what is left.
func (n *notifier) run() {
	for {
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, f := range batch {
			f()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-n.stopped:
			n.mu.Lock()
			empty := len(n.queue) == 0
			n.mu.Unlock()
			if empty {
				return
			}
		}
	}
}
