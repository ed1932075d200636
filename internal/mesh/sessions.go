package mesh

import (
	"encoding/binary"
	"fmt"
)

// SessionNote is one entry of a SESSIONS frame: a persistent session the
// sending node holds and wants the receiving node to keep a replica of
// (docs/SESSIONS.md), or, with Drop, one it no longer wants replicated there.
type SessionNote struct {
	ID       string
	Drop     bool // the receiver's replica of ID ends (the other fields are empty)
	Online   bool // the client is connected at the sender
	Protocol byte // MQTT protocol level of its last connect (4, 5)
	Filters  []SessionFilter
}

// SessionFilter is one subscription of a replicated session.
type SessionFilter struct {
	Filter string
	QoS    byte
}

// SessionChange is one SESSIONS message from a peer (its parts assembled).
// With Replace, Notes is every session the peer wants replicated here: a
// replica of that peer's that is not among them ends.
type SessionChange struct {
	Replace bool
	Notes   []SessionNote
}

const (
	sessionsReplace = 1 << 0
	sessionsMore    = 1 << 1
	noteDrop        = 1 << 0
	noteOnline      = 1 << 1
)

// noteSize estimates a note's encoded size, for cutting parts.
func noteSize(n SessionNote) int {
	size := len(n.ID) + 8
	for _, f := range n.Filters {
		size += len(f.Filter) + 4
	}
	return size
}

func appendSessions(dst []byte, f *frame) []byte {
	var flags byte
	if f.sessions.Replace {
		flags |= sessionsReplace
	}
	if f.more {
		flags |= sessionsMore
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(f.sessions.Notes)))
	for _, n := range f.sessions.Notes {
		dst = appendString(dst, n.ID)
		var nf byte
		if n.Drop {
			nf |= noteDrop
		}
		if n.Online {
			nf |= noteOnline
		}
		dst = append(dst, nf, n.Protocol)
		dst = binary.AppendUvarint(dst, uint64(len(n.Filters)))
		for _, sf := range n.Filters {
			dst = appendString(dst, sf.Filter)
			dst = append(dst, sf.QoS)
		}
	}
	return dst
}

func (d *decoder) sessions(f *frame) {
	flags := d.byte()
	if flags&^(sessionsReplace|sessionsMore) != 0 {
		d.fail("unknown sessions flags")
	}
	f.sessions.Replace = flags&sessionsReplace != 0
	f.more = flags&sessionsMore != 0
	n := d.count(4)
	if n > 0 {
		f.sessions.Notes = make([]SessionNote, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		note := SessionNote{ID: d.string()}
		nf := d.byte()
		note.Protocol = d.byte()
		if nf&^(noteDrop|noteOnline) != 0 {
			d.fail("unknown session note flags")
		}
		note.Drop, note.Online = nf&noteDrop != 0, nf&noteOnline != 0
		k := d.count(2)
		if k > 0 {
			note.Filters = make([]SessionFilter, 0, k)
		}
		for j := 0; j < k && d.err == nil; j++ {
			sf := SessionFilter{Filter: d.string(), QoS: d.byte()}
			if sf.QoS > 2 {
				d.fail(fmt.Sprintf("session filter qos %d", sf.QoS))
			}
			note.Filters = append(note.Filters, sf)
		}
		f.sessions.Notes = append(f.sessions.Notes, note)
	}
}
