// Package linkdefault holds the agent-link settings that both the mesh
// (internal/mesh) and the cluster file (internal/config) need: the defaults
// of the link limits, the minimum length of the cluster secret, and which
// node of a pair dials. It is a leaf package so that each rule has one
// source: config cannot import mesh, whose tests import config.
package linkdefault

import "time"

const (
	// Window is the number of unacknowledged messages in flight per link.
	Window = 4096
	// BufferMessages is the number of messages held per peer, queued and in flight.
	BufferMessages = 100000
	// BufferBytes is the number of topic, payload and property bytes held per peer.
	BufferBytes = 64 << 20
	// InterestGrace is how long a peer may be down before it is gone and its
	// queue discarded.
	InterestGrace = 2 * time.Minute
	// MinSecretLength is the shortest cluster secret, in bytes, that links
	// accept for their HMAC handshake.
	MinSecretLength = 16
)

// Dials reports whether node opens the link to peer: of each pair the name
// that sorts lower dials, so the pair has one connection. Tools that put
// something in front of a link listener (the compare bench's counting
// relays) must know which node listens.
func Dials(node, peer string) bool { return node < peer }
