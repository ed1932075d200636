package session

import (
	"fmt"
	"io"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// maxBatch bounds how many publishes the writer takes per lock, so that
// acknowledgements queued meanwhile are not held behind a long backlog.
const maxBatch = 256

// control is a packet other than PUBLISH waiting for the writer.
type control struct {
	kind byte        // packets.PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ, DISCONNECT, SUBSCRIBE, UNSUBSCRIBE
	id   uint16      // acknowledgements
	pkt  io.WriterTo // SUBSCRIBE, UNSUBSCRIBE
}

// batch is what the writer took from the queues in one go.
type batch struct {
	control   []control
	publishes []*outbound
	closing   bool
}

// writeLoop owns the buffered writer: it writes whatever is queued and
// flushes only when nothing more is, so a burst costs few syscalls. When it
// returns the session has ended; it completes everything still pending.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	err := s.writeUntilEnd()
	s.end(err)
	s.failAll()
}

func (s *Session) writeUntilEnd() error {
	var b batch
	var unflushed []*outbound // QoS 0: complete once flushed
	for {
		select {
		case <-s.stop:
			return nil // ended elsewhere, with its own reason
		case <-s.wakeUp:
		}
		for s.takeBatch(&b) {
			var err error
			unflushed, err = s.writeBatch(&b, unflushed)
			if err == nil && b.closing {
				err = s.bw.Flush()
				completeAll(unflushed, ErrClosed)
				return err // nil: a clean Close
			}
			if err != nil {
				err = fmt.Errorf("session: write: %w", err)
				completeAll(unflushed, err)
				return err
			}
		}
		if err := s.bw.Flush(); err != nil {
			err = fmt.Errorf("session: write: %w", err)
			completeAll(unflushed, err)
			return err
		}
		s.writeCount.Add(1)
		completeAll(unflushed, nil)
		unflushed = unflushed[:0]
	}
}

func completeAll(os []*outbound, err error) {
	for i, o := range os {
		o.complete(err)
		os[i] = nil
	}
}

// takeBatch moves the queued control packets and as many publishes as the
// broker's Receive Maximum allows into b, giving each QoS 1/2 publish a
// packet id and an in-flight entry. It reports whether b holds anything.
func (s *Session) takeBatch(b *batch) bool {
	clear(b.publishes)
	b.publishes = b.publishes[:0]
	s.mu.Lock()
	defer s.mu.Unlock()
	b.control, s.control = s.control, b.control[:0]
	b.closing = s.closing
	if s.closing || s.ended {
		return len(b.control) > 0 || b.closing
	}
	n := 0
	for n < len(s.queue) && n < maxBatch {
		o := s.queue[n]
		if o.err == nil && o.msg.QoS > 0 {
			if len(s.inflight) >= s.window {
				break
			}
			o.id, _ = s.allocID() // always found: the window leaves ids free
			s.inflight[o.id] = o
		}
		b.publishes = append(b.publishes, o)
		n++
	}
	clear(s.queue[:n])
	s.queue = s.queue[n:]
	return len(b.control) > 0 || len(b.publishes) > 0
}

// writeBatch encodes b into the buffered writer, control packets first
// (acknowledgements are what the broker waits on). QoS 0 publishes are
// appended to unflushed; refused ones complete with their error.
func (s *Session) writeBatch(b *batch, unflushed []*outbound) ([]*outbound, error) {
	for _, c := range b.control {
		if err := s.writeControl(c); err != nil {
			return unflushed, err
		}
	}
	for _, o := range b.publishes {
		if o.err != nil {
			o.complete(o.err)
			continue
		}
		if err := writePublish(s.bw, &o.msg, o.id); err != nil {
			return unflushed, err
		}
		s.sent.Add(1)
		if o.msg.QoS == 0 {
			unflushed = append(unflushed, o)
		}
	}
	return unflushed, nil
}

// writeControl writes one control packet. Acknowledgements are four fixed
// bytes (reason code 0 and no properties may be omitted [MQTT-3.4.2.1]); the
// codec would allocate several buffers for each.
func (s *Session) writeControl(c control) error {
	var err error
	switch c.kind {
	case packets.PUBACK, packets.PUBREC:
		s.acksSent.Add(1)
		err = s.writeAck(c.kind<<4, c.id)
	case packets.PUBREL:
		err = s.writeAck(packets.PUBREL<<4|2, c.id) // fixed header flags 0010 [MQTT-3.6.1-1]
	case packets.PUBCOMP:
		err = s.writeAck(packets.PUBCOMP<<4, c.id)
	case packets.PINGREQ:
		_, err = s.bw.Write([]byte{packets.PINGREQ << 4, 0})
	case packets.DISCONNECT:
		// Reason 0 with no properties: remaining length 0 [MQTT-3.14.2.1].
		_, err = s.bw.Write([]byte{packets.DISCONNECT << 4, 0})
	default:
		_, err = c.pkt.WriteTo(s.bw)
	}
	return err
}

func (s *Session) writeAck(header byte, id uint16) error {
	_, err := s.bw.Write([]byte{header, 2, byte(id >> 8), byte(id)})
	return err
}

// watchdog sends PINGREQ when the session wrote nothing (or heard nothing)
// for a keep-alive interval, and ends the session when the broker stayed
// silent for 1.5 times that [MQTT-3.1.2-22 applied to ourselves].
func (s *Session) watchdog() {
	defer s.wg.Done()
	if s.keepAlive <= 0 {
		<-s.stop
		return
	}
	ticker := time.NewTicker(s.keepAlive / 4)
	defer ticker.Stop()
	start := time.Now()
	lastRead, lastWrite, lastPing := start, start, time.Time{}
	reads, writes := s.readCount.Load(), s.writeCount.Load()
	for {
		var now time.Time
		select {
		case <-s.stop:
			return
		case now = <-ticker.C:
		}
		if r := s.readCount.Load(); r != reads {
			reads, lastRead = r, now
		}
		if w := s.writeCount.Load(); w != writes {
			writes, lastWrite = w, now
		}
		if now.Sub(lastRead) >= s.keepAlive*3/2 {
			s.end(errKeepAlive)
			return
		}
		writeIdle := now.Sub(lastWrite) >= s.keepAlive
		readIdle := now.Sub(lastRead) >= s.keepAlive && lastPing.Before(lastRead)
		if writeIdle || readIdle {
			lastPing = now
			s.queueControl(control{kind: packets.PINGREQ})
		}
	}
}
