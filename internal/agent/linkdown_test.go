package agent_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
)

// TestSubscribeWhileLinkDown: a client subscribes on node2 while its link
// with node1 is down, and a message is published on node1 after the SUBACK,
// before the link is back. node1 learns of the subscription only from the
// link's first SNAPSHOT; the snapshot's recent changes come as deltas with
// their times, so node1 replays the message from its history, as it does
// for a subscription made while the link is up (TestSubscribeWindow).
func TestSubscribeWhileLinkDown(t *testing.T) {
	gate := newLinkGate(t)
	var real string // node2's link listener, behind the gate
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := launch.Up(ctx, launch.Options{Nodes: 2, LBPort: -1, Dir: t.TempDir(), Logger: testLogger(t),
		Configure: func(cl *config.Cluster) {
			cl.ReplayWindow = config.Duration(20 * time.Second) // longer than the link takes to come back
			real, cl.Nodes[1].Link = cl.Nodes[1].Link, gate.addr()
			gate.setTarget(real)
		},
		NewAgent: func(cl *config.Cluster, node string, log *slog.Logger) (launch.InProcessAgent, error) {
			if node == "node2" { // node2 listens where the gate forwards to
				own := *cl
				own.Nodes = slices.Clone(cl.Nodes)
				own.Nodes[1].Link = real
				cl = &own
			}
			return newAgent(cl, node, log)
		}})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, n := range c.Config.Nodes {
		waitSettled(t, c, n.Name)
	}
	linkUp := func(up bool) func() bool {
		return func() bool {
			for _, p := range agentOf(c, "node1").Status().Peers {
				if p.Name == "node2" {
					return p.Up == up
				}
			}
			return false
		}
	}
	waitFor(t, 10*time.Second, "the link to come up", linkUp(true))

	gate.setOpen(false)
	waitFor(t, 10*time.Second, "node1 to see the link down", linkUp(false))
	sub := connect(t, addr(c, "node2"), "linkdown-sub")
	sub.subscribe("linkdown/t", 1)
	waitFor(t, 5*time.Second, "node2 to advertise linkdown/t", func() bool {
		return knowsFilter(agentOf(c, "node2").Status(), "linkdown/t")
	})
	connect(t, addr(c, "node1"), "linkdown-pub").pub("linkdown/t", 1, "published while the link was down")
	gate.setOpen(true)
	if got := sub.expect(1, 10*time.Second); string(got[0].Payload) != "published while the link was down" {
		t.Fatalf("got %q", got[0].Payload)
	}
}

// linkGate is a TCP forwarder in front of an agent's link listener that a
// test can close (existing connections cut, new ones refused) and open.
type linkGate struct {
	ln net.Listener

	mu     sync.Mutex
	target string // where connections are forwarded to
	open   bool
	conns  map[net.Conn]struct{}
}

func newLinkGate(t *testing.T) *linkGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &linkGate{ln: ln, open: true, conns: map[net.Conn]struct{}{}}
	go g.accept()
	t.Cleanup(func() { ln.Close(); g.setOpen(false) })
	return g
}

func (g *linkGate) addr() string { return g.ln.Addr().String() }

func (g *linkGate) setTarget(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.target = addr
}

func (g *linkGate) targetAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.target
}

func (g *linkGate) accept() {
	for {
		in, err := g.ln.Accept()
		if err != nil {
			return
		}
		go g.forward(in)
	}
}

// forward pipes in to the target while the gate is open.
func (g *linkGate) forward(in net.Conn) {
	out, err := net.Dial("tcp", g.targetAddr())
	if err != nil {
		in.Close()
		return
	}
	if !g.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	go func() { _, _ = io.Copy(out, in); out.Close() }()
	_, _ = io.Copy(in, out)
	in.Close()
}

// track records a connection pair, unless the gate is closed.
func (g *linkGate) track(conns ...net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		return false
	}
	for _, c := range conns {
		g.conns[c] = struct{}{}
	}
	return true
}

// setOpen opens or closes the gate; closing cuts what passes through it.
func (g *linkGate) setOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
	if open {
		return
	}
	for c := range g.conns {
		c.Close()
	}
	clear(g.conns)
}
