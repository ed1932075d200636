package bench

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/poll"
	"github.com/moha-project/moha/internal/session"
)

// StormOptions configure MeasureStorm: a fleet's reconnect storm after its
// node's broker restarts (issue 17 §2).
type StormOptions struct {
	Clients     int           // persistent-session clients on node2, one topic each (default 2000)
	Within      time.Duration // the clients reconnect spread over this (default 10 s)
	Rate        int           // messages a second node1's publisher sends them throughout (default 500)
	AgentBinary string        // the moha binary the agents run as
	Dir         string        // work directory (a temporary one when empty)
	Progress    io.Writer
}

// StormResult is what one storm measured.
type StormResult struct {
	Clients        int           `json:"clients"`
	Within         time.Duration `json:"within_ns"`
	SessionPresent int           `json:"session_present"` // reconnects that found their session
	Storm          time.Duration `json:"storm_ns"`        // first reconnect to the last CONNACK
	// ExactAfter is the time from the last CONNACK until node1 routes by
	// exactly the clients' filters again and node2's agent is not degraded
	// (0: it never stopped).
	ExactAfter     time.Duration `json:"exact_after_ns"`
	HolderDegraded time.Duration `json:"holder_degraded_ns"` // node2's agent seen degraded, from the restart on
	Published      int           `json:"published"`          // acknowledged by node1's broker
	Delivered      int           `json:"delivered"`          // distinct acknowledged messages the clients received
	Lost           int           `json:"lost"`
	Duplicated     int           `json:"duplicated"`
}

// MeasureStorm subscribes Clients persistent sessions on node2 (one
// devices/<i>/cmd each), then keeps a publisher on node1 sending to them
// while node2's broker restarts and every client reconnects (clean start 0)
// within Within; it reports whether each found its session, when node1 knew
// the clients' filters exactly again, and what of the acknowledged messages
// arrived.
func MeasureStorm(ctx context.Context, o StormOptions) (StormResult, error) {
	o.Clients = orDefault(o.Clients, 2000)
	o.Rate = orDefault(o.Rate, 500)
	if o.Within <= 0 {
		o.Within = 10 * time.Second
	}
	res := StormResult{Clients: o.Clients, Within: o.Within}
	if o.AgentBinary == "" {
		return res, errors.New("bench: storm: no agent binary")
	}
	c, stop, err := startPair(ctx, "storm", o.Dir, launch.Options{AgentBinary: o.AgentBinary,
		Configure: func(c *config.Cluster) { zero := 0; c.SessionReplicas = &zero }})
	if err != nil {
		return res, err
	}
	defer stop()
	holder, origin := c.Config.Nodes[1], c.Config.Nodes[0]
	s := &storm{o: o, holder: holder, origin: origin, got: make([]map[uint64]int, o.Clients), ackedTo: map[uint64]int{}}
	for i := range s.got {
		s.got[i] = map[uint64]int{}
	}
	progressf(o.Progress, "storm: %d persistent sessions subscribing on %s", o.Clients, holder.Name)
	if err := s.subscribeAll(ctx); err != nil {
		return res, err
	}
	if err := waitRoutes(ctx, origin, o.Clients); err != nil {
		return res, err
	}
	return s.run(ctx, c, res)
}

type storm struct {
	o              StormOptions
	holder, origin config.Node
	mu             sync.Mutex
	got            []map[uint64]int // per client: sequence -> arrivals
	acked          []uint64         // sequences node1's broker acknowledged
	ackedTo        map[uint64]int   // sequence -> client
}

func deviceID(i int) string    { return "moha-storm-" + strconv.Itoa(i) }
func deviceTopic(i int) string { return "devices/" + strconv.Itoa(i) + "/cmd" }

// subscribeAll makes every client's persistent session with its one
// subscription, 50 at a time, and leaves it offline.
func (s *storm) subscribeAll(ctx context.Context) error {
	return forEachClient(ctx, s.o.Clients, 50, func(i int) error {
		ep := endpoint{ClientID: deviceID(i), Address: s.holder.Broker.Address, Topic: deviceTopic(i)}
		sess, err := connectSubscriber(ctx, ep, 1, true, func([]byte) {})
		if err != nil {
			return err
		}
		closeSession(sess)
		return nil
	})
}

// forEachClient calls f for 0..n-1 on workers goroutines; the first error
// stops it.
func forEachClient(ctx context.Context, n, workers int, f func(i int) error) error {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil || errs[w] != nil {
					return
				}
				errs[w] = f(i)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitRoutes waits until origin routes by exactly n filters of its peer.
func waitRoutes(ctx context.Context, origin config.Node, n int) error {
	err := poll.Until(ctx, 2*time.Minute, statusPoll, func() (bool, error) {
		st, err := fetchStatus(ctx, origin.HTTP)
		return err == nil && len(st.Peers) > 0 && st.Peers[0].InterestFilters == n, nil
	})
	if err != nil {
		return fmt.Errorf("bench: storm: %s did not learn the %d filters: %w", origin.Name, n, err)
	}
	return nil
}

func (s *storm) run(ctx context.Context, c *launch.Cluster, res StormResult) (StormResult, error) {
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pubDone := make(chan error, 1)
	go func() { pubDone <- s.publish(pubCtx) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	degraded := make(chan time.Duration, 1)
	go func() { degraded <- watchDegraded(watchCtx, s.holder) }()

	time.Sleep(time.Second) // traffic flowing before the restart
	progressf(s.o.Progress, "storm: restarting %s's broker", s.holder.Name)
	c.Broker(s.holder.Name).Stop(10 * time.Second)
	if err := c.StartBroker(ctx, s.holder.Name); err != nil {
		return res, err
	}
	progressf(s.o.Progress, "storm: %d clients reconnecting within %v", s.o.Clients, s.o.Within)
	start := time.Now()
	sessions, present, lastConnack, err := s.reconnectAll(ctx, start)
	defer func() {
		for _, sess := range sessions {
			if sess != nil {
				closeSession(sess)
			}
		}
	}()
	if err != nil {
		return res, err
	}
	res.SessionPresent, res.Storm = present, lastConnack.Sub(start)
	exactAt, err := waitExact(ctx, s.holder, s.origin, s.o.Clients)
	if err != nil {
		return res, err
	}
	res.ExactAfter = max(exactAt.Sub(lastConnack), 0)
	time.Sleep(2 * time.Second) // steady traffic after the storm
	stopPub()
	if err := <-pubDone; err != nil {
		return res, err
	}
	stopWatch()
	res.HolderDegraded = <-degraded
	s.settle(ctx, 30*time.Second)
	s.tally(&res)
	return res, nil
}

// publish sends QoS 1 messages to random clients at Rate, each payload its
// sequence number, and records which sequence went to which client once
// node1's broker acknowledged it.
func (s *storm) publish(ctx context.Context) error {
	sess, err := dialSession(ctx, endpoint{ClientID: "moha-storm-pub", Address: s.origin.Broker.Address}, 100, false, nil)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer func() {
		// Closing completes what is still in flight as not acknowledged:
		// not counted.
		closeSession(sess)
		wg.Wait()
	}()
	tick := time.NewTicker(time.Second / time.Duration(s.o.Rate))
	defer tick.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		seq++
		i := rand.IntN(s.o.Clients)
		n := seq
		wg.Add(1)
		sess.Publish(message.Message{Topic: deviceTopic(i), QoS: 1, Payload: binary.BigEndian.AppendUint64(nil, n)}, func(err error) {
			defer wg.Done()
			if err == nil {
				s.mu.Lock()
				s.acked = append(s.acked, n)
				s.ackedTo[n] = i
				s.mu.Unlock()
			}
		})
	}
}

// reconnectAll reconnects every client with clean start 0 at a random
// moment within Within, keeping the connection to receive what its session
// holds and what comes next.
func (s *storm) reconnectAll(ctx context.Context, start time.Time) (sessions []*session.Session, present int, last time.Time, err error) {
	sessions = make([]*session.Session, s.o.Clients)
	// Each client's moment, taken in time order by the workers (in index
	// order a worker waiting for a late moment would hold up early ones).
	at := make([]time.Duration, s.o.Clients)
	order := make([]int, s.o.Clients)
	for i := range at {
		at[i], order[i] = time.Duration(rand.Int64N(int64(s.o.Within))), i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(at[a], at[b]) })
	var mu sync.Mutex
	err = forEachClient(ctx, s.o.Clients, 200, func(k int) error {
		i := order[k]
		time.Sleep(time.Until(start.Add(at[i])))
		ep := endpoint{ClientID: deviceID(i), Address: s.holder.Broker.Address}
		sess, err := dialSession(ctx, ep, subscriberReceiveMaximum, true, func(d *session.Delivery) {
			if len(d.Message.Payload) == 8 {
				s.mu.Lock()
				s.got[i][binary.BigEndian.Uint64(d.Message.Payload)]++
				s.mu.Unlock()
			}
			d.Ack()
		})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		sessions[i] = sess
		if sess.SessionPresent() {
			present++
		}
		if now := time.Now(); now.After(last) {
			last = now
		}
		return nil
	})
	return sessions, present, last, err
}

// waitExact returns when origin routes by exactly n filters of holder and
// holder's agent is not degraded.
func waitExact(ctx context.Context, holder, origin config.Node, n int) (time.Time, error) {
	err := poll.Until(ctx, 2*time.Minute, statusPoll, func() (bool, error) {
		st, err := fetchStatus(ctx, origin.HTTP)
		if err != nil || len(st.Peers) == 0 || st.Peers[0].InterestFilters != n {
			return false, nil
		}
		h, err := fetchStatus(ctx, holder.HTTP)
		return err == nil && !h.Degraded, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("bench: storm: interest not exact again: %w", err)
	}
	return time.Now(), nil
}

// watchDegraded adds up the time holder's agent is seen degraded until ctx
// ends.
func watchDegraded(ctx context.Context, holder config.Node) time.Duration {
	var total time.Duration
	prev := time.Now()
	for ctx.Err() == nil {
		now := time.Now()
		if h, err := fetchStatus(ctx, holder.HTTP); err == nil && h.Degraded {
			total += now.Sub(prev)
		}
		prev = now
		select {
		case <-ctx.Done():
		case <-time.After(statusPoll):
		}
	}
	return total
}

// settle waits until every acknowledged message arrived, or timeout.
func (s *storm) settle(ctx context.Context, timeout time.Duration) {
	_ = poll.Until(ctx, timeout, statusPoll, func() (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, n := range s.acked {
			if s.got[s.ackedTo[n]][n] == 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

func (s *storm) tally(res *StormResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res.Published = len(s.acked)
	for _, n := range s.acked {
		switch k := s.got[s.ackedTo[n]][n]; {
		case k == 0:
			res.Lost++
		default:
			res.Delivered++
			res.Duplicated += k - 1
		}
	}
}

// WriteStormTable prints one storm's figures.
func WriteStormTable(w io.Writer, r StormResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\twithin\tsession present\tstorm (first reconnect to last CONNACK)\tinterest exact after last CONNACK\tholder degraded\tpublished\tlost\tduplicated\t")
	fmt.Fprintf(tw, "%d\t%v\t%d\t%v\t%v\t%v\t%d\t%d\t%d\t\n", r.Clients, r.Within, r.SessionPresent,
		r.Storm.Round(time.Millisecond), r.ExactAfter.Round(time.Millisecond), r.HolderDegraded.Round(100*time.Millisecond),
		r.Published, r.Lost, r.Duplicated)
	return tw.Flush()
}
