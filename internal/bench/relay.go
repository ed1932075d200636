package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay is a TCP relay that counts every byte it carries, in both
// directions, framing and acknowledgements included. Put one on the path
// between brokers (or agents) and every setup is measured the same way.
type Relay struct {
	listener net.Listener
	target   string

	toTarget   atomic.Int64
	fromTarget atomic.Int64
	open       atomic.Int64 // connections relayed to the target right now

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// relayDialTimeout bounds the connect to the target for each accepted
// connection.
const relayDialTimeout = 5 * time.Second

// NewRelay listens on listen (e.g. "127.0.0.1:0") and relays each accepted
// connection to target.
func NewRelay(listen, target string) (*Relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("relay listen %s: %w", listen, err)
	}
	r := &Relay{listener: ln, target: target, conns: make(map[net.Conn]struct{})}
	r.wg.Go(r.acceptLoop)
	return r, nil
}

// Addr is the address the relay listens on.
func (r *Relay) Addr() string { return r.listener.Addr().String() }

// Bytes returns the bytes relayed so far towards the target and back.
func (r *Relay) Bytes() (toTarget, fromTarget int64) {
	return r.toTarget.Load(), r.fromTarget.Load()
}

// Open returns the number of connections being relayed to the target
// right now: how many links pass through this relay.
func (r *Relay) Open() int { return int(r.open.Load()) }

// Close stops accepting, closes every relayed connection and waits for
// the relay's goroutines. Safe to call more than once.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		for c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		if err := r.listener.Close(); err != nil {
			r.closeErr = fmt.Errorf("relay close: %w", err)
		}
		r.wg.Wait()
	})
	return r.closeErr
}

func (r *Relay) acceptLoop() {
	for {
		client, err := r.listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary accept errors (fd exhaustion) should not end the
			// relay; back off briefly instead of spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !r.track(client) {
			_ = client.Close()
			return
		}
		r.wg.Go(func() { r.serve(client) })
	}
}

// track registers c for Close; false once the relay is closed.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// serve relays one client connection to a new connection to the target.
func (r *Relay) serve(client net.Conn) {
	defer r.untrack(client)
	defer client.Close()
	target, err := net.DialTimeout("tcp", r.target, relayDialTimeout)
	if err != nil {
		return // the client sees its connection closed, as with a dead target
	}
	if !r.track(target) {
		_ = target.Close()
		return
	}
	defer r.untrack(target)
	defer target.Close()
	r.open.Add(1)
	defer r.open.Add(-1)

	var wg sync.WaitGroup
	wg.Go(func() { pipe(target, client, &r.toTarget) })
	wg.Go(func() { pipe(client, target, &r.fromTarget) })
	wg.Wait()
}

// pipe copies src to dst, counting bytes written, and passes the end of
// src on as a half-close of dst so protocols that close one side first
// still finish. On an error both connections are closed so the other
// direction ends too.
func pipe(dst, src net.Conn, count *atomic.Int64) {
	_, err := io.Copy(countingWriter{dst, count}, src)
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// countingWriter counts what reaches dst. It hides dst's ReadFrom on
// purpose: a splice would bypass the count.
type countingWriter struct {
	dst   io.Writer
	count *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.dst.Write(p)
	w.count.Add(int64(n))
	return n, err
}
