// Package placement owns where a client lands: HAProxy hashes its client
// id into one of Buckets buckets (crc32, as HAProxy's converter computes
// it), and each bucket lists the nodes in a fixed order (rendezvous
// hashing of bucket and node name); the client goes to the first node of
// its bucket's order that is up. The rendered HAProxy config and the agents
// compute the same orders, so an agent knows where a client will land when
// its node dies: where a replica of its session belongs (docs/SESSIONS.md).
package placement

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
)

// Buckets is how many buckets client ids are hashed into: enough that the
// load spreads evenly over the nodes, few enough that the rendered rules
// stay short (Buckets × nodes lines).
const Buckets = 64

// Bucket returns the bucket of a client id: CRC-32 (IEEE) modulo Buckets,
// exactly what HAProxy's crc32 and mod converters compute.
func Bucket(clientID string) int {
	return int(crc32.ChecksumIEEE([]byte(clientID)) % Buckets)
}

// Order returns the nodes in the order they serve bucket b. A node's
// death moves only the buckets it served, each to the next node of that
// bucket's order; the others keep their node.
func Order(b int, nodes []string) []string {
	order := slices.Clone(nodes)
	scores := make(map[string]uint64, len(nodes))
	for _, n := range nodes {
		scores[n] = score(b, n)
	}
	slices.SortFunc(order, func(x, y string) int {
		switch sx, sy := scores[x], scores[y]; {
		case sx > sy:
			return -1
		case sx < sy:
			return 1
		}
		return strings.Compare(x, y)
	})
	return order
}

func score(b int, node string) uint64 {
	h := sha256.Sum256([]byte(strconv.Itoa(b) + "\x00" + node))
	return binary.BigEndian.Uint64(h[:8])
}

// Serving returns the first n nodes of the client's bucket order that up
// reports up: its home, then where it lands if the home dies, and so on.
func Serving(clientID string, nodes []string, up func(string) bool, n int) []string {
	var out []string
	for _, node := range Order(Bucket(clientID), nodes) {
		if len(out) == n {
			break
		}
		if up(node) {
			out = append(out, node)
		}
	}
	return out
}
