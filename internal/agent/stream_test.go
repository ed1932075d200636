package agent_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// stream is QoS 1 traffic from several publishers on one broker to one
// topic, each message named "<publisher>/<seq>", and the subscriber that
// tallies what arrived: for tests that disturb the path and then count
// what was lost.
type stream struct {
	t         *testing.T
	topic     string
	sub       *client
	published []atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
	seen      map[string]bool
}

// startStream connects publishers to pubAddr, publishing to topic without
// pause until stopPublishing; sub must be subscribed to topic already.
func startStream(t *testing.T, pubAddr, topic string, publishers int, sub *client) *stream {
	s := &stream{t: t, topic: topic, sub: sub, published: make([]atomic.Int64, publishers), stop: make(chan struct{}), seen: map[string]bool{}}
	for p := range publishers {
		pub := connect(t, pubAddr, topic+"-pub-"+strconv.Itoa(p))
		s.wg.Go(func() { s.publish(pub, p) })
	}
	return s
}

func (s *stream) publish(pub *client, p int) {
	for i := 0; ; i++ {
		select {
		case <-s.stop:
			return
		default:
		}
		payload := strconv.Itoa(p) + "/" + strconv.Itoa(i)
		if _, err := pub.pc.Publish(context.Background(), &paho.Publish{Topic: s.topic, QoS: 1, Payload: []byte(payload)}); err != nil {
			s.t.Errorf("publish %s: %v", payload, err)
			return
		}
		s.published[p].Store(int64(i + 1))
	}
}

// receive waits for n more messages of the stream.
func (s *stream) receive(n int) {
	s.t.Helper()
	for n > 0 {
		if m := s.sub.expect(1, 10*time.Second)[0]; m.Topic == s.topic {
			s.seen[string(m.Payload)] = true
			n--
		}
	}
}

// streamDrainLimit bounds the whole wait for a stream's backlog.
const streamDrainLimit = 3 * time.Minute

// finish stops the publishers and waits until every message published has
// arrived, failing with the ones that did not when none arrived for idle
// (or after streamDrainLimit): a backlog still draining on a loaded machine
// is not a loss.
func (s *stream) finish(idle time.Duration, what string) (total int) {
	s.t.Helper()
	close(s.stop)
	s.wg.Wait()
	for p := range s.published {
		total += int(s.published[p].Load())
	}
	limit := time.After(streamDrainLimit)
	quiet := time.NewTimer(idle)
	defer quiet.Stop()
	for len(s.seen) < total {
		var timedOut bool
		select {
		case m := <-s.sub.msgs:
			if m.Topic == s.topic && !s.seen[string(m.Payload)] {
				s.seen[string(m.Payload)] = true
				quiet.Reset(idle)
			}
		case <-quiet.C:
			timedOut = true
		case <-limit:
			timedOut = true
		}
		if timedOut {
			var missing []string
			for p := range s.published {
				for i := range int(s.published[p].Load()) {
					if id := strconv.Itoa(p) + "/" + strconv.Itoa(i); !s.seen[id] {
						missing = append(missing, id)
					}
				}
			}
			s.t.Fatalf("%d of %d messages lost %s, first %v", len(missing), total, what, missing[:min(10, len(missing))])
		}
	}
	return total
}
