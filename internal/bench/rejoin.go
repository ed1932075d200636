package bench

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/poll"
	"github.com/moha-project/moha/internal/session"
)

// RejoinOptions configure MeasureRejoin: a node that lost its broker's
// state rejoins a cluster holding many retained messages (issue 17 §3).
type RejoinOptions struct {
	Topics      int // retained topics written on node1 (default 100000)
	AgentBinary string
	AgentArgs   []string // extra arguments for both agents (e.g. --pprof)
	Dir         string
	Progress    io.Writer
}

// RejoinResult is what one rejoin measured.
type RejoinResult struct {
	Topics  int           `json:"topics"`
	Written time.Duration `json:"written_ns"` // writing them on node1
	// Rejoin is from node2's agent starting (its broker fresh, empty) until
	// it holds every retained topic.
	Rejoin time.Duration `json:"rejoin_ns"`
	// Live traffic node1 → node2 during the rejoin: a QoS 1 message every
	// 20 ms to a subscriber on node2, its latency while the digest and the
	// missing messages cross.
	LiveSent  int           `json:"live_sent"`
	LiveLost  int           `json:"live_lost"`
	LiveP50   time.Duration `json:"live_p50_ns"`
	LiveMax   time.Duration `json:"live_max_ns"`
	PeerRSS   int64         `json:"peer_rss_bytes"`   // node1's agent (it answers the digest)
	JoinerRSS int64         `json:"joiner_rss_bytes"` // node2's agent after the rejoin
	BrokerRSS int64         `json:"joiner_broker_rss_bytes"`
}

// MeasureRejoin writes Topics retained messages on node1 of a two-node
// cluster, then replaces node2's broker with a fresh one (no persistence
// file) and restarts its agent, and measures until node2 holds them all,
// with live traffic crossing meanwhile.
func MeasureRejoin(ctx context.Context, o RejoinOptions) (RejoinResult, error) {
	o.Topics = orDefault(o.Topics, 100000)
	res := RejoinResult{Topics: o.Topics}
	if o.AgentBinary == "" {
		return res, errors.New("bench: rejoin: no agent binary")
	}
	c, stop, err := startPair(ctx, "rejoin", o.Dir, launch.Options{AgentBinary: o.AgentBinary,
		AgentArgs: map[string][]string{"node1": o.AgentArgs, "node2": o.AgentArgs}})
	if err != nil {
		return res, err
	}
	defer stop()
	origin, joiner := c.Config.Nodes[0], c.Config.Nodes[1]
	progressf(o.Progress, "rejoin: writing %d retained topics on %s", o.Topics, origin.Name)
	start := time.Now()
	if err := writeRetained(ctx, origin.Broker.Address, o.Topics); err != nil {
		return res, err
	}
	if err := waitRetained(ctx, origin.HTTP, o.Topics, 5*time.Minute); err != nil {
		return res, err
	}
	res.Written = time.Since(start)

	progressf(o.Progress, "rejoin: %s restarts with an empty broker", joiner.Name)
	c.StopAgent(joiner.Name)
	c.Broker(joiner.Name).Stop(10 * time.Second)
	if err := os.RemoveAll(joiner.DataDir); err != nil {
		return res, fmt.Errorf("bench: rejoin: %w", err)
	}
	if err := c.StartBroker(ctx, joiner.Name); err != nil {
		return res, err
	}
	start = time.Now()
	if err := c.StartAgent(ctx, joiner.Name); err != nil {
		return res, err
	}
	held := make(chan error, 1)
	go func() {
		err := waitRetained(ctx, joiner.HTTP, o.Topics, 5*time.Minute)
		res.Rejoin = time.Since(start)
		held <- err
	}()
	// The probe subscribes once the agent follows its broker's log (so its
	// subscription is seen, not guessed): the rejoin is under way by then.
	if err := c.WaitReady(ctx, joiner.Name); err != nil {
		return res, err
	}
	live := &liveProbe{}
	if err := live.subscribe(ctx, joiner.Broker.Address); err != nil {
		return res, err
	}
	defer live.close()
	// Publish once node1 routes the probe's topic to node2: the probe
	// measures the rejoin's effect on live traffic, not how a subscription
	// made while the link comes up is replayed (docs/HA.md).
	if err := waitRouted(ctx, origin.HTTP, liveTopic); err != nil {
		return res, err
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	probeDone := make(chan error, 1)
	go func() { probeDone <- live.publish(probeCtx, origin.Broker.Address) }()
	if err := <-held; err != nil {
		return res, err
	}
	stopProbe()
	if err := <-probeDone; err != nil {
		return res, err
	}
	live.settle(ctx, 10*time.Second)
	res.LiveSent, res.LiveLost, res.LiveP50, res.LiveMax = live.figures()
	res.PeerRSS = rss(c.AgentProcess(origin.Name).Pid())
	res.JoinerRSS = rss(c.AgentProcess(joiner.Name).Pid())
	res.BrokerRSS = rss(c.Broker(joiner.Name).Pid())
	return res, nil
}

// writeRetained publishes n retained QoS 1 messages, rejoin/<i>, 1000 in
// flight.
func writeRetained(ctx context.Context, addr string, n int) error {
	sess, err := dialSession(ctx, endpoint{ClientID: "moha-rejoin-writer", Address: addr}, 1000, false, nil)
	if err != nil {
		return err
	}
	defer closeSession(sess)
	sem := make(chan struct{}, 1000)
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		payload := fmt.Appendf(nil, `{"device":%d,"config":"v1","interval_s":60}`, i)
		sess.Publish(message.Message{Topic: "rejoin/" + strconv.Itoa(i), QoS: 1, Retain: true, Payload: payload}, func(err error) {
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
			<-sem
		})
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return fmt.Errorf("bench: rejoin: write retained: %w", firstErr)
	}
	return nil
}

// waitRetained waits until the agent at httpAddr knows n retained topics.
func waitRetained(ctx context.Context, httpAddr string, n int, timeout time.Duration) error {
	err := poll.Until(ctx, timeout, statusPoll, func() (bool, error) {
		st, err := fetchStatus(ctx, httpAddr)
		return err == nil && st.RetainedTopics >= n, nil
	})
	if err != nil {
		return fmt.Errorf("bench: rejoin: %s did not hold %d retained topics: %w", httpAddr, n, err)
	}
	return nil
}

// waitRouted waits until the agent at httpAddr routes filter to its peer.
func waitRouted(ctx context.Context, httpAddr, filter string) error {
	err := poll.Until(ctx, time.Minute, 10*time.Millisecond, func() (bool, error) {
		st, err := fetchStatus(ctx, httpAddr)
		return err == nil && len(st.Peers) > 0 && slices.Contains(st.Peers[0].Interest, filter), nil
	})
	if err != nil {
		return fmt.Errorf("bench: rejoin: the live probe's filter not routed: %w", err)
	}
	return nil
}

// liveProbe is a subscriber on the joining node and a publisher on the
// other, a message every 20 ms, whose latency shows whether live traffic
// waits behind the rejoin's digest and retained messages.
type liveProbe struct {
	sub     *session.Session
	mu      sync.Mutex
	sentAt  map[uint64]time.Time
	latency map[uint64]time.Duration
}

const liveTopic = "rejoin-live/probe"

func (p *liveProbe) subscribe(ctx context.Context, addr string) error {
	p.sentAt, p.latency = map[uint64]time.Time{}, map[uint64]time.Duration{}
	ep := endpoint{ClientID: "moha-rejoin-live", Address: addr, Topic: liveTopic}
	sub, err := connectSubscriber(ctx, ep, 1, false, func(b []byte) {
		if len(b) != 16 {
			return
		}
		seq, at := binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:]))
		p.mu.Lock()
		if _, dup := p.latency[seq]; !dup {
			p.latency[seq] = time.Since(time.Unix(0, at))
		}
		p.mu.Unlock()
	})
	p.sub = sub
	return err
}

func (p *liveProbe) publish(ctx context.Context, addr string) error {
	pub, err := dialSession(ctx, endpoint{ClientID: "moha-rejoin-live-pub", Address: addr}, 100, false, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil // the rejoin ended first: nothing to measure
		}
		return err
	}
	defer closeSession(pub)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		payload := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, seq), uint64(now.UnixNano()))
		pub.Publish(message.Message{Topic: liveTopic, QoS: 1, Payload: payload}, func(err error) {
			if err == nil {
				p.mu.Lock()
				p.sentAt[seq] = now
				p.mu.Unlock()
			}
		})
	}
}

func (p *liveProbe) settle(ctx context.Context, timeout time.Duration) {
	_ = poll.Until(ctx, timeout, statusPoll, func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for seq := range p.sentAt {
			if _, ok := p.latency[seq]; !ok {
				return false, nil
			}
		}
		return true, nil
	})
}

func (p *liveProbe) figures() (sent, lost int, p50, maxLatency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ls []time.Duration
	for seq := range p.sentAt {
		l, ok := p.latency[seq]
		if !ok {
			lost++
			continue
		}
		ls = append(ls, l)
	}
	slices.Sort(ls)
	if len(ls) > 0 {
		p50, maxLatency = ls[len(ls)/2], ls[len(ls)-1]
	}
	return len(p.sentAt), lost, p50, maxLatency
}

func (p *liveProbe) close() {
	if p.sub != nil {
		closeSession(p.sub)
	}
}

// WriteRejoinTable prints one rejoin's figures.
func WriteRejoinTable(w io.Writer, r RejoinResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "retained topics\twritten in\trejoin (agent start to all held)\tlive sent\tlive lost\tlive p50\tlive max\tpeer agent RSS\tjoiner agent RSS\tjoiner broker RSS\t")
	fmt.Fprintf(tw, "%d\t%v\t%v\t%d\t%d\t%v\t%v\t%.1f MiB\t%.1f MiB\t%.1f MiB\t\n", r.Topics, r.Written.Round(time.Millisecond), r.Rejoin.Round(time.Millisecond),
		r.LiveSent, r.LiveLost, r.LiveP50.Round(100*time.Microsecond), r.LiveMax.Round(100*time.Microsecond), mib(r.PeerRSS), mib(r.JoinerRSS), mib(r.BrokerRSS))
	return tw.Flush()
}
