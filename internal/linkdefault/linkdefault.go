// Package linkdefault holds the agent-link settings that both the mesh
// (internal/mesh) and the cluster file (internal/config) need: the defaults
// of the link limits and the minimum length of the cluster secret. It is a
// leaf package so that each rule has one source: config cannot import cluster,
// whose tests import config.
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
