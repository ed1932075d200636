package message

import "fmt"

// Outcome is what became of a message an agent sent to a peer (the mesh's
// Send reports it; the forwarder acknowledges the origin broker by it).
type Outcome int

const (
	// Acked: the peer's broker accepted the message (the link was up).
	Acked Outcome = iota + 1
	// Buffered: the peer is down; the message is held and resent when the
	// link returns (or is dropped, counted, if the peer is gone for good).
	Buffered
	// Dropped: over the buffer limits while the peer is down, the peer is
	// gone or unknown, or the message is too large.
	Dropped
	// Abandoned: the mesh stopped before the peer took the message. It
	// must not be acknowledged to the origin broker, which then redelivers
	// it to the next run (the data session is persistent).
	Abandoned
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Buffered:
		return "buffered"
	case Dropped:
		return "dropped"
	case Abandoned:
		return "abandoned"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}
