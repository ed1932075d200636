package render

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/testkit"
)

// These tests hand the rendered files to the real daemons.

func findBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		testkit.SkipUnavailable(t, "%s is not installed", name)
	}
	return p
}

func TestHAProxyAcceptsConfig(t *testing.T) {
	haproxy := findBinary(t, "haproxy")
	c := loadCluster(t)
	for _, opt := range []HAProxyOptions{{}, {Bind: "127.0.0.1:11883", StatsBind: "127.0.0.1:8404"}} {
		conf, err := HAProxy(c, opt)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, haproxy, "-c", "-f", file).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("haproxy -c rejected the config (%+v): %v\n%s\n%s", opt, err, out, conf)
		}
		if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ALERT]")) {
			t.Errorf("haproxy -c warns about the config (%+v):\n%s", opt, out)
		}
	}
}

// TestHAProxyRejectsBrokenConfig shows the check above can fail.
func TestHAProxyRejectsBrokenConfig(t *testing.T) {
	haproxy := findBinary(t, "haproxy")
	conf, err := HAProxy(loadCluster(t), HAProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	broken := strings.Replace(conf, "addr 10.0.0.11", "addr no-such-host.invalid", 1)
	if err := os.WriteFile(file, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, haproxy, "-c", "-f", file).CombinedOutput(); err == nil {
		t.Fatalf("haproxy -c accepted an unresolvable check address:\n%s", out)
	}
}

// TestMosquittoRunsRenderedConfig starts mosquitto on the rendered config and checks
// what the agent relies on: the listener, subscribe and connect lines on $SYS/broker/log,
// $SYS published every second, the log file, and persistence written at shutdown.
func TestMosquittoRunsRenderedConfig(t *testing.T) {
	b := newBrokerFixture(t, "")
	logDir := t.TempDir()
	b.giveToBrokerUser(t, logDir)
	logFile := filepath.Join(logDir, "mosquitto.log")
	conf, err := Mosquitto(b.cluster, "n1", MosquittoOptions{LogFile: logFile})
	if err != nil {
		t.Fatal(err)
	}
	b.start(t, conf)

	msgs := make(chan *paho.Publish, 100)
	watcher := b.connect(t, "render-watcher", "", "", msgs)
	subscribe(t, watcher, "$SYS/broker/log/#", "$SYS/broker/uptime")
	waitForMessage(t, msgs, "$SYS/broker/log/M/subscribe", "render-watcher 0 $SYS/broker/log/#")
	b.connect(t, "render-probe", "", "", nil)
	waitForMessage(t, msgs, "$SYS/broker/log/N", "as render-probe (p5, c1")
	// The retained uptime arrives on subscribe; a second within a few seconds means sys_interval is short.
	waitForMessage(t, msgs, "$SYS/broker/uptime", "")
	waitForMessage(t, msgs, "$SYS/broker/uptime", "")

	b.stop(t)
	if _, err := os.Stat(filepath.Join(b.dataDir, "mosquitto.db")); err != nil {
		t.Errorf("no persistence file after shutdown: %v", err)
	}
	log, err := os.ReadFile(logFile)
	if err != nil || !bytes.Contains(log, []byte("render-probe")) {
		t.Errorf("log file lacks the probe's connection (%v):\n%s", err, log)
	}
}

// TestMosquittoRequiresPasswordWhenUsernameSet checks the rendered authentication: with a
// broker username, anonymous clients are refused and the password file is used.
func TestMosquittoRequiresPasswordWhenUsernameSet(t *testing.T) {
	b := newBrokerFixture(t, "moha-agent")
	b.securePosture(t, map[string]string{"moha-agent": "s3cret-pass", "client1": "client-pass"})

	if err := b.tryConnect(t, "anonymous", "", ""); err == nil {
		t.Error("anonymous client accepted, want it refused")
	}
	if err := b.tryConnect(t, "wrong", "moha-agent", "wrong-pass"); err == nil {
		t.Error("wrong password accepted")
	}
	if err := b.tryConnect(t, "agent", "moha-agent", "s3cret-pass"); err != nil {
		t.Errorf("agent with the right password refused: %v", err)
	}
}

// TestMosquittoACL (issue 15 §3): with the rendered ACL an authenticated
// client may use every ordinary topic but may neither publish to the
// agent's $moha/# (its markers) nor read $SYS/broker/log/# (client ids and
// addresses); the agent's user may do both.
func TestMosquittoACL(t *testing.T) {
	b := newBrokerFixture(t, "moha-agent")
	b.securePosture(t, map[string]string{"moha-agent": "s3cret-pass", "client1": "client-pass"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	clientMsgs := make(chan *paho.Publish, 16)
	client := b.connect(t, "client1", "client1", "client-pass", clientMsgs)
	sharedMsgs := make(chan *paho.Publish, 16)
	shared := b.connect(t, "client2", "client1", "client-pass", sharedMsgs)
	agentMsgs := make(chan *paho.Publish, 64)
	agent := b.connect(t, "agent", "moha-agent", "s3cret-pass", agentMsgs)
	// Mosquitto grants a subscription and checks read access per message: the
	// client's subscription to the log is accepted, and must deliver nothing.
	for _, sub := range []struct {
		c *paho.Client
		f string
	}{{client, "$SYS/broker/log/#"}, {client, "app/#"}, {shared, "$share/g/app/#"}, {agent, "$share/g/app/#"}, {agent, "$SYS/broker/log/N"}, {agent, "$moha/n1/mark/#"}} {
		if ack, err := sub.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: sub.f, QoS: 1}}}); err != nil || ack.Reasons[0] >= 0x80 {
			t.Fatalf("subscribe %s: %v %v", sub.f, ack, err)
		}
	}
	if res, err := client.Publish(ctx, &paho.Publish{Topic: "$moha/n1/mark/0", QoS: 1, Payload: []byte("forged!!")}); err == nil && res.ReasonCode < 0x80 {
		t.Errorf("a client's publish to $moha was accepted (reason %#x)", res.ReasonCode)
	}
	if err := b.tryConnect(t, "log-line", "client1", "client-pass"); err != nil { // a connect line on the log
		t.Fatal(err)
	}
	if res, err := agent.Publish(ctx, &paho.Publish{Topic: "$moha/n1/mark/1", QoS: 1, Payload: []byte("marker!!")}); err != nil || res.ReasonCode >= 0x80 {
		t.Fatalf("the agent may not publish its markers: %v %v", res, err)
	}
	if res, err := agent.Publish(ctx, &paho.Publish{Topic: "app/x", QoS: 1, Payload: []byte("for the client")}); err != nil || res.ReasonCode >= 0x80 {
		t.Fatalf("the agent may not publish a peer's message: %v %v", res, err)
	}
	got := map[string]bool{}
	for !got["$moha/n1/mark/1"] || !got["$SYS/broker/log/N"] {
		select {
		case m := <-agentMsgs:
			got[m.Topic] = true
		case <-ctx.Done():
			t.Fatalf("the agent got %v, want its marker and a log line", got)
		}
	}
	if got["$moha/n1/mark/0"] {
		t.Error("the client's forged marker reached the agent")
	}
	// In order: a log line the client could read would come before app/x.
	select {
	case m := <-clientMsgs:
		if m.Topic != "app/x" {
			t.Fatalf("the client got %s before app/x", m.Topic)
		}
	case <-ctx.Done():
		t.Fatal("the client did not get app/x")
	}
	// A shared subscription (a client's, and the agent's share membership)
	// is allowed: the group's one copy reaches one of them.
	select {
	case m := <-sharedMsgs:
		if m.Topic != "app/x" {
			t.Fatalf("the shared subscriber got %s", m.Topic)
		}
	case m := <-agentMsgs:
		if m.Topic != "app/x" {
			t.Fatalf("the agent's membership got %s", m.Topic)
		}
	case <-ctx.Done():
		t.Fatal("no member of the shared group got app/x")
	}
}

// securePosture renders the node's config with its ACL and a password file
// holding users, and starts the broker on it.
func (b *brokerFixture) securePosture(t *testing.T, users map[string]string) {
	t.Helper()
	mosquittoPasswd := findBinary(t, "mosquitto_passwd")
	passwd := filepath.Join(b.dataDir, "passwd")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := true
	for user, pass := range users {
		args := []string{"-b", passwd, user, pass}
		if first {
			args = []string{"-b", "-c", passwd, user, pass}
			first = false
		}
		if out, err := exec.CommandContext(ctx, mosquittoPasswd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	b.giveToBrokerUser(t, passwd)
	acl, err := MosquittoACL(b.cluster, "n1")
	if err != nil {
		t.Fatal(err)
	}
	aclFile := ACLPath(&b.cluster.Nodes[0])
	if err := os.WriteFile(aclFile, []byte(acl), 0o644); err != nil {
		t.Fatal(err)
	}
	b.giveToBrokerUser(t, aclFile)
	conf, err := Mosquitto(b.cluster, "n1", MosquittoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.start(t, conf)
}

// brokerFixture is one mosquitto process for a one-node cluster in a temp dir.
type brokerFixture struct {
	cluster *config.Cluster
	dataDir string
	confDir string
	port    int
	bin     string
	cmd     *exec.Cmd
	exited  chan struct{}
	output  *syncBuffer
}

func newBrokerFixture(t *testing.T, username string) *brokerFixture {
	t.Helper()
	b := &brokerFixture{bin: findBinary(t, "mosquitto"), confDir: t.TempDir()}
	b.dataDir = filepath.Join(t.TempDir(), "data dir") // a space: persistence_location must cope
	if err := os.Mkdir(b.dataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	b.giveToBrokerUser(t, b.dataDir)
	b.port = testkit.FreePort(t)
	c := config.Default()
	c.Secret = "render-test-secret-0123456789"
	c.Nodes = []config.Node{{
		Name:    "n1",
		Broker:  config.Broker{Address: fmt.Sprintf("127.0.0.1:%d", b.port), Username: username},
		DataDir: b.dataDir,
	}}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	b.cluster = &c
	return b
}

// giveToBrokerUser lets mosquitto use path. Started as root, mosquitto drops to the user
// "mosquitto", as it does in production, where its data dir belongs to that user.
func (b *brokerFixture) giveToBrokerUser(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("mosquitto")
	if err != nil {
		return // no such user: mosquitto keeps running as root
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's directories are 0700: let the broker's user through them.
	for dir := filepath.Dir(path); dir != os.TempDir() && dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func (b *brokerFixture) start(t *testing.T, conf string) {
	t.Helper()
	file := filepath.Join(b.confDir, "mosquitto.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b.output = &syncBuffer{}
	b.cmd = exec.Command(b.bin, "-c", file)
	b.cmd.Stdout, b.cmd.Stderr = b.output, b.output
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.exited
	})
	addr := fmt.Sprintf("127.0.0.1:%d", b.port)
	testkit.WaitFor(t, 10*time.Second, "mosquitto listening on "+addr, func() bool {
		select {
		case <-b.exited:
			t.Fatalf("mosquitto exited at start:\n%s\nconfig:\n%s", b.output, conf)
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// stop ends mosquitto with SIGTERM, as a service manager would, and waits for it.
func (b *brokerFixture) stop(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto did not stop on SIGTERM:\n%s", b.output)
	}
}

// tryConnect makes one MQTT v5 connection and reports whether the broker accepted it.
func (b *brokerFixture) tryConnect(t *testing.T, id, username, password string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := client.Connect(ctx, connectPacket(id, username, password))
	if err == nil && ack.ReasonCode < 0x80 {
		_ = client.Disconnect(&paho.Disconnect{})
		<-client.Done()
		return nil
	}
	conn.Close()
	<-client.Done()
	if err == nil {
		err = fmt.Errorf("connack reason %#x", ack.ReasonCode)
	}
	return err
}

// connect opens a client that stays connected for the rest of the test; messages it
// receives go to msgs (when not nil).
func (b *brokerFixture) connect(t *testing.T, id, username, password string, msgs chan<- *paho.Publish) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: conn}
	if msgs != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) {
			select {
			case msgs <- p.Packet:
			default: // the test stopped reading
			}
			return true, nil
		}}
	}
	client := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ack, err := client.Connect(ctx, connectPacket(id, username, password)); err != nil || ack.ReasonCode != 0 {
		conn.Close()
		t.Fatalf("connect %s: %v %+v", id, err, ack)
	}
	t.Cleanup(func() {
		_ = client.Disconnect(&paho.Disconnect{})
		conn.Close()
		<-client.Done()
	})
	return client
}

func connectPacket(id, username, password string) *paho.Connect {
	return &paho.Connect{
		ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: username, UsernameFlag: username != "",
		Password: []byte(password), PasswordFlag: password != "",
	}
}

func subscribe(t *testing.T, client *paho.Client, filters ...string) {
	t.Helper()
	sub := &paho.Subscribe{}
	for _, f := range filters {
		sub.Subscriptions = append(sub.Subscriptions, paho.SubscribeOptions{Topic: f})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Subscribe(ctx, sub); err != nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
}

// waitForMessage reads msgs until one on topic whose payload contains text arrives.
func waitForMessage(t *testing.T, msgs <-chan *paho.Publish, topic, text string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m.Topic == topic && strings.Contains(string(m.Payload), text) {
				return
			}
		case <-deadline:
			t.Fatalf("no message on %s containing %q within 5s", topic, text)
		}
	}
}

type syncBuffer = testkit.SyncBuffer
