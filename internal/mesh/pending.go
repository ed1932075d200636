package mesh

import (
	"net"
	"sync"
)

// pendingHandshakes holds the connections still authenticating. When it is
// full, a new connection evicts the oldest one instead of being refused: a
// flood of idle or slow connections then only shortens each other's time,
// while a real peer's handshake — a couple of round trips — completes
// before its turn to be evicted comes.
type pendingHandshakes struct {
	mu    sync.Mutex
	max   int
	conns []*pendingConn // oldest first
}

type pendingConn struct {
	conn    net.Conn
	evicted bool // closed to make room (under pendingHandshakes.mu)
}

// add records conn, closing and marking the oldest when full.
func (p *pendingHandshakes) add(conn net.Conn) *pendingConn {
	pc := &pendingConn{conn: conn}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) >= p.max {
		oldest := p.conns[0]
		p.conns = p.conns[1:]
		oldest.evicted = true
		oldest.conn.Close()
	}
	p.conns = append(p.conns, pc)
	return pc
}

// done removes pc once its handshake ended, and reports whether it had
// been evicted.
func (p *pendingHandshakes) done(pc *pendingConn) (evicted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.conns {
		if c == pc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	return pc.evicted
}
