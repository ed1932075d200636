package lab

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// connectOnce opens an MQTT v5 session to addr from the client namespace.
func (l *lab) connectOnce(addr string, cp *paho.Connect, onMsg func(*paho.Publish), timeout time.Duration) (*paho.Client, error) {
	conn, err := l.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn, OnClientError: func(error) {}}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			onMsg(r.Packet)
			return true, nil
		}}
	}
	pc := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ack, err := pc.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect %s via %s: %w", cp.ClientID, addr, err)
	}
	if ack.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("connect %s via %s: reason %d", cp.ClientID, addr, ack.ReasonCode)
	}
	return pc, nil
}

// probeConnect connects and disconnects a clean session.
func (l *lab) probeConnect(addr, id string, timeout time.Duration) error {
	pc, err := l.connectOnce(addr, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 10}, nil, timeout)
	if err != nil {
		return err
	}
	return pc.Disconnect(&paho.Disconnect{})
}

// client is an MQTT v5 client in the client namespace that reconnects (every 100 ms)
// and resubscribes whenever its connection ends, until stopped.
type client struct {
	l       *lab
	addr    string
	connect paho.Connect
	filters []string
	onMsg   func(*paho.Publish)

	mu       sync.Mutex
	pc       *paho.Client
	up       chan struct{} // closed while connected; replaced on disconnect
	connects int

	cancel context.CancelFunc
	done   chan struct{}
}

// startClient connects id to addr and keeps it connected. A persistent session
// (expiry > 0) starts clean only the first time.
func (l *lab) startClient(addr, id string, expiry uint32, filters []string, onMsg func(*paho.Publish)) *client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{l: l, addr: addr, filters: filters, onMsg: onMsg, up: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	// A persistent session is created with clean start off: Mosquitto 2.0.11
	// does not save a session created with clean start on across a restart,
	// whatever its session expiry (see internal/agent TestNodeRestartUnderLoad).
	c.connect = paho.Connect{ClientID: id, CleanStart: expiry == 0, KeepAlive: 5}
	if expiry > 0 {
		c.connect.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	l.t.Cleanup(c.stop)
	go c.loop(ctx)
	return c
}

func (c *client) loop(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		pc, err := c.session()
		if err == nil {
			c.mu.Lock()
			c.pc, c.connects = pc, c.connects+1
			close(c.up)
			c.mu.Unlock()
			select {
			case <-pc.Done():
			case <-ctx.Done():
				_ = pc.Disconnect(&paho.Disconnect{})
			}
			c.mu.Lock()
			c.pc, c.up = nil, make(chan struct{})
			c.mu.Unlock()
			if c.connect.Properties != nil {
				c.connect.CleanStart = false // resume the persistent session
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// session connects and subscribes once.
func (c *client) session() (*paho.Client, error) {
	cp := c.connect
	pc, err := c.l.connectOnce(c.addr, &cp, c.onMsg, time.Second)
	if err != nil {
		return nil, err
	}
	if len(c.filters) > 0 {
		sub := &paho.Subscribe{}
		for _, f := range c.filters {
			sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := pc.Subscribe(ctx, sub); err != nil {
			_ = pc.Disconnect(&paho.Disconnect{})
			return nil, err
		}
	}
	return pc, nil
}

var errStopped = errors.New("lab: client stopped")

// current waits up to timeout for a connected session.
func (c *client) current(timeout time.Duration) (*paho.Client, error) {
	c.mu.Lock()
	pc, up := c.pc, c.up
	c.mu.Unlock()
	if pc != nil {
		return pc, nil
	}
	select {
	case <-up:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.pc == nil {
			return nil, errStopped
		}
		return c.pc, nil
	case <-c.done:
		return nil, errStopped
	case <-time.After(timeout):
		return nil, fmt.Errorf("%s: not connected after %v", c.connect.ClientID, timeout)
	}
}

func (c *client) connectCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connects
}

// publish sends one QoS 1 message, waiting for a session first.
func (c *client) publish(topic string, payload []byte, retain bool, timeout time.Duration) error {
	pc, err := c.current(timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := pc.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: 1, Retain: retain})
	if err != nil {
		return err
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("publish %s: reason %d", topic, resp.ReasonCode)
	}
	return nil
}

// stop ends the client (a clean DISCONNECT if connected) and waits. Safe twice.
func (c *client) stop() {
	c.cancel()
	<-c.done
}

// placement learns which node each client id is connected to, and through which
// load balancer, from the brokers' own connect lines on $SYS/broker/log/N.
type placement struct {
	mu       sync.Mutex
	where    map[string]connectLine
	watchers map[string]*client // by node
}

type connectLine struct {
	Node string
	From string // source address: a load balancer's, or the client's when direct
	At   time.Time
}

var connectRE = regexp.MustCompile(`New client connected from ([0-9.]+):\d+ as (.+) \(p\d`)

func (l *lab) watchPlacement() *placement {
	p := &placement{where: map[string]connectLine{}, watchers: map[string]*client{}}
	for _, n := range nodeNames {
		l.watch(p, n)
	}
	return p
}

// watch (re)connects the log watcher on node. A restarted agent cannot know what a
// client connected before it subscribed to, and stays degraded until that client
// reconnects: drills that restart an agent reconnect its node's watcher.
func (l *lab) watch(p *placement, node string) {
	if old := p.watchers[node]; old != nil {
		old.stop()
	}
	p.watchers[node] = l.startClient(nodeIPs[node]+":1883", "lab-watch-"+node, 0, []string{"$SYS/broker/log/N"}, func(m *paho.Publish) {
		sm := connectRE.FindStringSubmatch(string(m.Payload))
		// The node's own address: its agent's connections (a session replica
		// or a takeover uses the client's id), not the client's placement.
		if sm == nil || strings.HasPrefix(sm[2], "lab-watch-") || sm[1] == nodeIPs[node] {
			return
		}
		p.mu.Lock()
		p.where[sm[2]] = connectLine{Node: node, From: sm[1], At: time.Now()}
		p.mu.Unlock()
	})
	if _, err := p.watchers[node].current(5 * time.Second); err != nil {
		l.t.Fatalf("log watcher on %s: %v", node, err)
	}
}

func (p *placement) of(id string) (connectLine, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.where[id]
	return c, ok
}
