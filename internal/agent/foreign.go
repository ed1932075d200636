package agent

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// dialMemory is how long the agent remembers the local address of a
// connection it opened to its broker: the broker logs the connect line
// milliseconds later.
const dialMemory = time.Minute

// ownDials remembers the local addresses of the agent's recent connections
// to its broker, so that a connect line for one of its client ids from any
// other address shows a foreign client using it (a leaked cluster secret,
// or a second agent configured as this node).
type ownDials struct {
	mu     sync.Mutex
	seen   map[string]dial // normalized host:port -> the connection dialed from it
	pruned time.Time       // when seen was last cleared of old entries
}

type dial struct {
	id string // the client id it connected with
	at time.Time
}

// note records a connection the agent opened with client id id from local
// (its sessions' Dialed hook, through sessionConfig).
func (d *ownDials) note(local net.Addr, id string) {
	key, ok := addrKey(local.String())
	if !ok {
		return
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]dial{}
	}
	// Forgetting is a walk over every entry: once per dialMemory, not per
	// dial (a node keeping many replicas dials often).
	if now.Sub(d.pruned) > dialMemory {
		for k, old := range d.seen {
			if now.Sub(old.at) > dialMemory {
				delete(d.seen, k)
			}
		}
		d.pruned = now
	}
	d.seen[key] = dial{id: id, at: now}
}

// ours reports whether a connect line for client id from address from (as
// the broker logs it) is one of the agent's own recent connections. Both
// must match: a client's connection may reuse a local port an agent
// connection left moments ago.
func (d *ownDials) ours(from, id string) bool {
	key, ok := addrKey(from)
	if !ok {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	got, seen := d.seen[key]
	return seen && got.id == id && time.Since(got.at) <= dialMemory
}

// addrKey normalizes "host:port" — Mosquitto logs IPv6 hosts without
// brackets ("::1:5555") — to one spelling.
func addrKey(s string) (string, bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", false
	}
	port, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return "", false
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]")
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", false
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), uint16(port)).String(), true
}

// checkOwnConnect counts and logs a connect line for one of the agent's
// client ids that none of its own connections made. The broker has then
// closed the agent's session of that id; the agent reconnects on its own
// (and so closes the foreign one).
func (a *Agent) checkOwnConnect(id, from string) {
	if a.dials.ours(from, id) {
		return
	}
	a.security.event("foreign_session", "a client connected with one of the agent's client ids: the cluster secret may have leaked, or two agents run as this node", "role", a.ids.role(id), "from", from)
}
