package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Issue 16's drill: persistent sessions survive the loss of their node.
const (
	sessionSubscribers = 100 // half MQTT 3.1.1, half MQTT v5
	sessionPubEvery    = 20 * time.Millisecond
)

// drillSessionKill SIGKILLs the broker and the agent of the node holding the
// most persistent-session subscribers.
func (l *lab) drillSessionKill(t *testing.T) { l.sessionNodeLoss(t, true) }

// drillSessionLinkCut takes that node's network link down instead, and back up
// once the subscribers have moved.
func (l *lab) drillSessionLinkCut(t *testing.T) { l.sessionNodeLoss(t, false) }

// sessionNodeLoss: 100 persistent-session subscribers (50 MQTT 3.1.1 on
// paho.mqtt.golang, 50 MQTT v5 on paho.golang) connect through the floating IP
// and spread over the nodes; a QoS 1 and a QoS 2 publisher on every node send
// each of them messages in turn. The node holding most subscribers is lost.
// Every subscriber reconnects through the floating IP with clean start 0 and
// must find its session (session present 1, no resubscription) and receive
// every message whose publish was acknowledged — but those the lost node's
// broker acknowledged in its last moments, before its agent forwarded them
// (killed: lost with it, as with one broker's crash).
func (l *lab) sessionNodeLoss(t *testing.T, kill bool) {
	sl := &sessionLoad{l: l, t: t, acked: map[string]sentMsg{}, got: map[string]map[string]int{}}
	defer sl.stop()
	for i := range sessionSubscribers {
		sl.addSubscriber(fmt.Sprintf("lab-%s-%03d", strings.TrimPrefix(t.Name(), "TestLab/"), i), i%2 == 0)
	}
	l.waitPlaced(t, sl.ids())
	l.figure(t, "subscribers", l.placementFigure(sl.ids()))
	victim := l.busiestNode(sl.ids())
	l.waitReplicated(t, sessionSubscribers)
	for _, n := range nodeNames {
		sl.addPublisher(n, 1)
		sl.addPublisher(n, 2)
	}
	warm := time.Now()
	waitFor(t, 20*time.Second, "every subscriber receiving from every publisher", func() bool { return sl.allFlowing(warm) })

	moving := map[string]bool{}
	for _, id := range sl.ids() {
		if at, _ := l.place.of(id); at.Node == victim {
			moving[id] = true
		}
	}
	lost := time.Now()
	if kill {
		l.kill("mosquitto-" + victim)
		l.kill("agent-" + victim)
	} else {
		l.mustIP(victim, "link", "set", "eth0", "down")
	}
	resumed, ok := pollUntil(60*time.Second, func() bool { return sl.allResumed(moving, lost) })
	if !ok {
		t.Fatalf("not every subscriber of %s resumed within %v: %s", victim, resumed, sl.resumeFigure(moving, lost))
	}
	l.figure(t, "lost_node", victim)
	l.figure(t, "moved_subscribers", len(moving))
	l.figure(t, "failover_s", resumed)
	if bad := sl.sessionAbsent(); len(bad) > 0 {
		t.Errorf("%d subscribers resumed with session present 0: %v", len(bad), bad)
	}
	time.Sleep(2 * time.Second) // steady load after the failover: what must arrive in full
	sl.stopPublishers()
	if !kill {
		l.mustIP(victim, "link", "set", "eth0", "up")
		// Ready takes a majority only: the sessions may end before every
		// link is back, and a clean start must reach the victim anyway
		// (CLIENT announcements are sent again on link up).
		l.waitReady(t, victim, true, 20*time.Second)
	}
	sl.settle(30 * time.Second)
	tl := sl.tally(victim, lost, kill)
	l.figure(t, "acked", tl.acked)
	l.figure(t, "lost", tl.lost)
	l.figure(t, "lost_in_flight_on_lost_node", tl.inFlight)
	l.figure(t, "duplicated", tl.duplicated)
	if tl.lost > 0 {
		t.Errorf("%d acknowledged messages lost, e.g. %v", tl.lost, tl.missing)
	}
	sl.stop()
	sl.endSessions()
	if kill {
		l.startBroker(victim)
		l.startAgent(victim)
		l.waitReady(t, victim, true, 20*time.Second)
		l.watch(l.place, victim)
	}
	l.waitSettled(t, victim, 30*time.Second)
	// A clean start ends a session everywhere, as on one broker: no node
	// keeps one (or a replica) of the drill's subscribers.
	if _, ok := pollUntil(15*time.Second, func() bool { return len(l.sessionsLeft("lab/sessions/")) == 0 }); !ok {
		t.Errorf("sessions of the drill's subscribers left after their clean start (advertised by): %v", l.sessionsLeft("lab/sessions/"))
	}
}

// sessionsLeft lists node:filter for every filter with prefix a node advertises.
func (l *lab) sessionsLeft(prefix string) []string {
	var out []string
	for _, n := range nodeNames {
		s, err := l.status(n)
		if err != nil {
			return []string{n + ": " + err.Error()}
		}
		for _, p := range s.Peers {
			for _, f := range p.Interest {
				if strings.HasPrefix(f, prefix) {
					out = append(out, p.Name+":"+f)
				}
			}
		}
	}
	return out
}

// busiestNode returns the node most of ids are connected to.
func (l *lab) busiestNode(ids []string) string {
	best := nodeNames[0]
	for _, n := range nodeNames {
		if l.countOn(n, ids) > l.countOn(best, ids) {
			best = n
		}
	}
	return best
}

// waitReplicated waits until the nodes keep n session replicas between them and
// every node sees every other advertise what that one advertises (the replicas'
// filters included).
func (l *lab) waitReplicated(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d session replicas, known to every node", n), func() bool {
		kept := 0
		own := map[string]int{}
		views := map[string]map[string]int{}
		for _, node := range nodeNames {
			s, err := l.status(node)
			if err != nil {
				return false
			}
			kept += s.Replication.Kept
			var in struct {
				Filters int `json:"filters"`
			}
			_ = json.Unmarshal(s.Interest, &in)
			own[node] = in.Filters
			views[node] = map[string]int{}
			for _, p := range s.Peers {
				views[node][p.Name] = p.InterestFilters
			}
		}
		for _, v := range views {
			for peer, k := range v {
				if k != own[peer] {
					return false
				}
			}
		}
		return kept >= n
	})
}

// sentMsg is one acknowledged publish.
type sentMsg struct {
	sub, pub string
	at       time.Time
}

// sessionLoad is the drill's traffic: every message names its subscriber in
// its topic, its publisher and a sequence number in its payload.
type sessionLoad struct {
	l *lab
	t *testing.T

	mu    sync.Mutex
	acked map[string]sentMsg        // payload -> the publish
	got   map[string]map[string]int // subscriber -> payload -> copies
	subs  []*durable                // in id order
	pubs  []*client                 //
	stopP atomic.Bool               //
	pubWG sync.WaitGroup            //
}

func (sl *sessionLoad) ids() []string {
	var out []string
	for _, s := range sl.subs {
		out = append(out, s.id)
	}
	return out
}

func sessionTopic(id string) string { return "lab/sessions/" + id }

func (sl *sessionLoad) addSubscriber(id string, v311 bool) {
	sl.mu.Lock()
	sl.got[id] = map[string]int{}
	sl.mu.Unlock()
	d := &durable{l: sl.l, id: id, v311: v311, qos: byte(1 + len(sl.subs)%4/2), onMsg: func(p string) {
		sl.mu.Lock()
		sl.got[id][p]++
		sl.mu.Unlock()
	}}
	d.start()
	sl.subs = append(sl.subs, d)
	if err := d.waitConnected(10 * time.Second); err != nil {
		sl.t.Fatal(err)
	}
}

// addPublisher publishes at qos on node (directly, not through the floating
// IP), to each subscriber in turn; a failed publish is retried.
func (sl *sessionLoad) addPublisher(node string, qos byte) {
	id := fmt.Sprintf("lab-sess-pub-%s-q%d", node, qos)
	c := sl.l.startClient(nodeIPs[node]+":1883", id, 0, nil, nil)
	sl.pubs = append(sl.pubs, c)
	targets := sl.ids()
	sl.pubWG.Go(func() {
		for seq := 0; !sl.stopP.Load(); seq++ {
			sub := targets[seq%len(targets)]
			payload := id + ":" + strconv.Itoa(seq)
			for !sl.stopP.Load() {
				if pc, err := c.current(time.Second); err == nil && publishQoS(pc, sessionTopic(sub), payload, qos) == nil {
					sl.mu.Lock()
					sl.acked[payload] = sentMsg{sub: sub, pub: node, at: time.Now()}
					sl.mu.Unlock()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(sessionPubEvery)
		}
	})
}

func publishQoS(pc *paho.Client, topic, payload string, qos byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := pc.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos})
	if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
		err = fmt.Errorf("publish %s: reason %d", topic, resp.ReasonCode)
	}
	return err
}

// allFlowing reports whether every subscriber got a message from every
// publisher sent after since.
func (sl *sessionLoad) allFlowing(since time.Time) bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	from := map[string]map[string]bool{}
	for p, m := range sl.acked {
		if m.at.Before(since) || sl.got[m.sub][p] == 0 {
			continue
		}
		if from[m.sub] == nil {
			from[m.sub] = map[string]bool{}
		}
		from[m.sub][p[:strings.LastIndexByte(p, ':')]] = true
	}
	for _, s := range sl.subs {
		if len(from[s.id]) < len(sl.pubs) {
			return false
		}
	}
	return true
}

func (sl *sessionLoad) allResumed(moving map[string]bool, after time.Time) bool {
	for _, s := range sl.subs {
		if moving[s.id] && !s.resumedAfter(after) {
			return false
		}
	}
	return true
}

func (sl *sessionLoad) resumeFigure(moving map[string]bool, after time.Time) string {
	var waiting []string
	for _, s := range sl.subs {
		if moving[s.id] && !s.resumedAfter(after) {
			s.mu.Lock()
			waiting = append(waiting, fmt.Sprintf("%s (%d connects, last error %v)", s.id, len(s.connects), s.lastErr))
			s.mu.Unlock()
		}
	}
	return fmt.Sprintf("%d of %d still away: %v", len(waiting), len(moving), waiting)
}

// sessionAbsent lists the subscribers that reconnected to no session.
func (sl *sessionLoad) sessionAbsent() []string {
	var out []string
	for _, s := range sl.subs {
		if s.absent.Load() > 0 {
			out = append(out, s.id)
		}
	}
	return out
}

func (sl *sessionLoad) stopPublishers() {
	sl.stopP.Store(true)
	sl.pubWG.Wait()
}

// settle waits until every acknowledged message arrived, or timeout.
func (sl *sessionLoad) settle(timeout time.Duration) {
	_, _ = pollUntil(timeout, func() bool {
		sl.mu.Lock()
		defer sl.mu.Unlock()
		for p, m := range sl.acked {
			if sl.got[m.sub][p] == 0 {
				return false
			}
		}
		return true
	})
}

type sessionTally struct {
	acked, lost, inFlight, duplicated int
	missing                           []string
}

// tally counts what arrived. A message the lost node's broker acknowledged
// within inFlightBound of its death may have died with it (kill only).
func (sl *sessionLoad) tally(victim string, lost time.Time, kill bool) sessionTally {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var tl sessionTally
	tl.acked = len(sl.acked)
	for p, m := range sl.acked {
		if sl.got[m.sub][p] > 0 {
			continue
		}
		if kill && m.pub == victim && lost.Sub(m.at) < inFlightBound {
			tl.inFlight++
			continue
		}
		tl.lost++
		if len(tl.missing) < 5 {
			tl.missing = append(tl.missing, fmt.Sprintf("%s←%s (acked %s before the loss)", m.sub, p, lost.Sub(m.at).Round(time.Millisecond)))
		}
	}
	for _, byPayload := range sl.got {
		for _, n := range byPayload {
			tl.duplicated += max(0, n-1)
		}
	}
	return tl
}

func (sl *sessionLoad) stop() {
	sl.stopPublishers()
	for _, c := range sl.pubs {
		c.stop()
	}
	for _, s := range sl.subs {
		s.stop()
	}
}

// endSessions ends every subscriber's session (clean start), and with it its
// replicas, so that later drills start from nothing.
func (sl *sessionLoad) endSessions() {
	for _, s := range sl.subs {
		if err := sl.l.probeConnect(floatingIP+":1883", s.id, 5*time.Second); err != nil {
			sl.t.Logf("end session %s: %v", s.id, err)
		}
	}
}

// durable is a persistent-session subscriber behind the floating IP: MQTT
// 3.1.1 (paho.mqtt.golang, clean session 0) or MQTT v5 (paho.golang, clean
// start 0, expiry 1 h). It subscribes once, on its first connection; when a
// connection ends it connects again every 100 ms and expects its session.
type durable struct {
	l     *lab
	id    string
	v311  bool
	qos   byte
	onMsg func(payload string)

	mu       sync.Mutex
	up       chan struct{} // closed while connected
	connects []time.Time
	conn     any          // the live connection: v3conn or v5conn
	lastErr  error        // the last failed connection attempt
	absent   atomic.Int32 // reconnections that found no session
	cancel   context.CancelFunc
	done     chan struct{}
}

func (d *durable) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done, d.up = cancel, make(chan struct{}), make(chan struct{})
	go d.loop(ctx)
}

func (d *durable) loop(ctx context.Context) {
	defer close(d.done)
	for ctx.Err() == nil {
		ended, present, err := d.session()
		d.mu.Lock()
		d.lastErr = err
		d.mu.Unlock()
		if err == nil {
			d.mu.Lock()
			first := len(d.connects) == 0
			d.connects = append(d.connects, time.Now())
			close(d.up)
			d.mu.Unlock()
			if !first && !present {
				d.absent.Add(1)
			}
			if first || !present {
				if err := d.subscribe(); err != nil {
					d.l.t.Logf("%s subscribe: %v", d.id, err)
				}
			}
			select {
			case <-ended:
			case <-ctx.Done():
			}
			d.disconnect()
			d.mu.Lock()
			d.up = make(chan struct{})
			d.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitConnected waits until the subscriber is connected.
func (d *durable) waitConnected(timeout time.Duration) error {
	d.mu.Lock()
	up := d.up
	d.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: not connected after %v", d.id, timeout)
	}
}

func (d *durable) resumedAfter(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(d.connects, func(at time.Time) bool { return at.After(t) })
}

func (d *durable) stop() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
}

// The two client libraries' connections.
type v3conn struct{ c mqtt.Client }
type v5conn struct{ pc *paho.Client }

func (d *durable) setConn(c any) {
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
}

func (d *durable) takeConn(keep bool) any {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.conn
	if !keep {
		d.conn = nil
	}
	return c
}

// session connects once with clean start 0; ended closes when the connection does.
func (d *durable) session() (ended <-chan struct{}, present bool, err error) {
	addr := floatingIP + ":1883"
	if d.v311 {
		lost := make(chan struct{})
		var once sync.Once
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(d.id).SetCleanSession(false).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second).
			SetKeepAlive(5 * time.Second).SetPingTimeout(2 * time.Second).
			SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) { return d.l.dial(u.Host, 2*time.Second) }).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { d.onMsg(string(m.Payload())) }).
			SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) })
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			return nil, false, fmt.Errorf("connect %s: %v", d.id, tok.Error())
		}
		d.setConn(v3conn{c})
		return lost, tok.(*mqtt.ConnectToken).SessionPresent(), nil
	}
	expiry := uint32(3600)
	cp := &paho.Connect{ClientID: d.id, CleanStart: false, KeepAlive: 5, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	conn, err := d.l.dial(addr, 2*time.Second)
	if err != nil {
		return nil, false, err
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			d.onMsg(string(r.Packet.Payload))
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ack, err := pc.Connect(ctx, cp)
	if err != nil || ack.ReasonCode != 0 {
		conn.Close()
		return nil, false, fmt.Errorf("connect %s: %v", d.id, err)
	}
	d.setConn(v5conn{pc})
	return pc.Done(), ack.SessionPresent, nil
}

func (d *durable) subscribe() error {
	switch c := d.takeConn(true).(type) {
	case v3conn:
		tok := c.c.Subscribe(sessionTopic(d.id), d.qos, nil)
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			return fmt.Errorf("subscribe: %v", tok.Error())
		}
	case v5conn:
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: sessionTopic(d.id), QoS: d.qos}}})
		return err
	}
	return nil
}

// disconnect closes the live connection, leaving the session.
func (d *durable) disconnect() {
	switch c := d.takeConn(false).(type) {
	case v3conn:
		c.c.Disconnect(0)
	case v5conn:
		_ = c.pc.Disconnect(&paho.Disconnect{})
	}
}
