package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/render"
	"github.com/moha-project/moha/internal/testkit"
)

// The lab's addresses (lab.sh gives each namespace its eth0 address).
const (
	lb1IP      = "10.77.0.11"
	lb2IP      = "10.77.0.12"
	floatingIP = "10.77.0.200"
	mqttPort   = 1883
)

var nodeIPs = map[string]string{"node1": "10.77.0.21", "node2": "10.77.0.22", "node3": "10.77.0.23"}

var nodeNames = []string{"node1", "node2", "node3"}

// lab is one running lab: namespaces, processes and the cluster description.
type lab struct {
	t       *testing.T
	run     string // namespace name prefix, unique per run
	dir     string
	script  string
	moha    string // the moha binary
	cluster *config.Cluster
	file    string // cluster.yaml
	report  *report
	place   *placement // who is connected where, from the brokers' logs

	mu    sync.Mutex
	procs map[string]*launch.Process // by role: mosquitto-node1, agent-node1, haproxy-lb1, keepalived-lb1

	launcher chan func() // runs on the launcher thread; closed when the lab ends
	launched sync.WaitGroup
}

// startLauncher starts the thread every lab process is forked from. Children die
// with the thread that forked them (Pdeathsig), and the dialers in netns_test.go end
// their threads on purpose, so forks must come from a thread that outlives the lab.
func (l *lab) startLauncher() {
	l.launcher = make(chan func())
	l.launched.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for f := range l.launcher {
			f()
		}
	})
}

// onLauncher runs f on the launcher thread and waits for it.
func (l *lab) onLauncher(f func()) {
	done := make(chan struct{})
	l.launcher <- func() { defer close(done); f() }
	<-done
}

func (l *lab) stopLauncher() {
	close(l.launcher)
	l.launched.Wait()
}

// TestLab starts the lab once and runs the drills against it, most important first.
func TestLab(t *testing.T) {
	l := startLab(t)
	t.Run("LBFailover", l.drillLBFailover)
	t.Run("BrokerKill", l.drillBrokerKill)
	t.Run("AgentKill", l.drillAgentKill)
	t.Run("SessionKill", l.drillSessionKill)
	t.Run("SessionLinkCut", l.drillSessionLinkCut)
	t.Run("Partition", l.drillPartition)
	t.Run("RollingRestart", l.drillRollingRestart)
	t.Run("StuckPeer", l.drillStuckPeer)
}

// skipUnlessLabCanRun skips with the reason when the lab cannot run here.
func skipUnlessLabCanRun(t *testing.T) {
	if testing.Short() {
		t.Skip("lab: skipped with -short")
	}
	if os.Getenv("MOHA_LAB") == "0" {
		testkit.SkipUnavailable(t, "lab: skipped with MOHA_LAB=0")
	}
	if os.Geteuid() != 0 {
		testkit.SkipUnavailable(t, "lab: needs root for network namespaces (run as root, or set MOHA_LAB=0 to silence)")
	}
	if _, ok := setnsSyscall[runtime.GOARCH]; !ok {
		testkit.SkipUnavailable(t, "lab: setns syscall number unknown on %s", runtime.GOARCH)
	}
	for _, bin := range []string{"ip", "mosquitto", "haproxy", "keepalived"} {
		if _, err := launch.FindBinary(bin); err != nil {
			testkit.SkipUnavailable(t, "lab: %v", err)
		}
	}
	probe := fmt.Sprintf("mohaprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		testkit.SkipUnavailable(t, "lab: network namespaces unavailable (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
}

// labDir is where configs and process logs go: a temporary directory, or
// MOHA_LAB_KEEP (created, and left behind for reading after a failure).
func labDir(t *testing.T) string {
	keep := os.Getenv("MOHA_LAB_KEEP")
	if keep == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab files kept in %s", keep)
	return keep
}

func startLab(t *testing.T) *lab {
	skipUnlessLabCanRun(t)
	script, err := filepath.Abs("lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, run: fmt.Sprintf("moha%d", os.Getpid()%100000), dir: labDir(t), script: script,
		procs: map[string]*launch.Process{}, report: newReport()}
	// Registered first, so it runs last: after every process is gone the namespaces go.
	l.startLauncher()
	t.Cleanup(l.netDown)
	t.Cleanup(l.stopLauncher)
	t.Cleanup(l.stopAll)
	t.Cleanup(l.writeReport)
	if out, err := exec.Command(script, "up", l.run).CombinedOutput(); err != nil {
		t.Fatalf("lab.sh up: %v\n%s", err, out)
	}
	l.buildMoha()
	l.writeCluster()
	for _, n := range nodeNames {
		l.startBroker(n)
	}
	for _, n := range nodeNames {
		l.startAgent(n)
	}
	for _, n := range nodeNames {
		l.waitReady(t, n, true, 20*time.Second)
	}
	l.place = l.watchPlacement()
	for _, lb := range []string{"lb1", "lb2"} {
		l.writeLBConfigs(lb)
		l.startHAProxy(lb)
		l.startKeepalived(lb)
	}
	l.waitVIPOn("lb1", 15*time.Second)
	l.waitLBServes(15 * time.Second)
	return l
}

func (l *lab) ns(name string) string { return l.run + "-" + name }

// netDown removes every namespace of this run and whatever still runs in it.
func (l *lab) netDown() {
	cmd := exec.Command(l.script, "down", l.run)
	cmd.Env = append(os.Environ(), fmt.Sprintf("LAB_KEEP_PID=%d", os.Getpid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Errorf("lab.sh down: %v\n%s", err, out)
	}
}

func (l *lab) stopAll() {
	l.mu.Lock()
	procs := l.procs
	l.procs = map[string]*launch.Process{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop(3 * time.Second) })
	}
	wg.Wait()
}

func (l *lab) buildMoha() {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		l.t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	l.moha = filepath.Join(l.dir, "moha")
	cmd := exec.Command("go", "build", "-o", l.moha, "./cmd/moha")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("build moha: %v\n%s", err, out)
	}
}

func (l *lab) writeCluster() {
	c := config.Default()
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	c.Name = "lab"
	c.Secret = hex.EncodeToString(secret)
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	c.StatusToken = hex.EncodeToString(token)
	for _, n := range nodeNames {
		ip := nodeIPs[n]
		c.Nodes = append(c.Nodes, config.Node{Name: n, Broker: config.Broker{Address: ip + ":1883"},
			Link: ip + ":7946", HTTP: ip + ":9101", DataDir: filepath.Join(l.dir, n)})
	}
	lb := &c.LoadBalancers
	lb.Port = mqttPort
	lb.MaxConn = 1000 // HAProxy must raise its FD limit to about twice this
	lb.FloatingIP = floatingIP + "/24"
	lb.Interface = "eth0"
	lb.Hosts = []config.LBHost{{Name: "lb1", Address: lb1IP, Priority: 150}, {Name: "lb2", Address: lb2IP, Priority: 100}}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		l.t.Fatalf("lab cluster: %v", err)
	}
	data, err := c.Marshal()
	if err != nil {
		l.t.Fatal(err)
	}
	l.file = filepath.Join(l.dir, "cluster.yaml")
	if err := os.WriteFile(l.file, data, 0o600); err != nil {
		l.t.Fatal(err)
	}
	l.cluster = &c
}

// startIn starts bin in namespace ns under role; `ip netns exec` execs bin, so the
// process (and its process group) is the daemon itself.
func (l *lab) startIn(role, ns, bin string, args ...string) *launch.Process {
	l.t.Helper()
	var p *launch.Process
	var err error
	l.onLauncher(func() {
		p, err = launch.Start(role, filepath.Join(l.dir, "logs", role+".log"), "ip",
			append([]string{"netns", "exec", l.ns(ns), bin}, args...)...)
	})
	if err != nil {
		l.t.Fatalf("start %s: %v", role, err)
	}
	l.mu.Lock()
	l.procs[role] = p
	l.mu.Unlock()
	return p
}

func (l *lab) proc(role string) *launch.Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.procs[role]
}

// kill SIGKILLs role's process group and forgets it.
func (l *lab) kill(role string) {
	l.mu.Lock()
	p := l.procs[role]
	delete(l.procs, role)
	l.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

func (l *lab) startBroker(node string) {
	l.t.Helper()
	dataDir := filepath.Join(l.dir, node)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	text, err := render.Mosquitto(l.cluster, node, render.MosquittoOptions{User: "root"})
	if err != nil {
		l.t.Fatalf("render mosquitto %s: %v", node, err)
	}
	conf := filepath.Join(dataDir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		l.t.Fatal(err)
	}
	bin, _ := launch.FindBinary("mosquitto")
	p := l.startIn("mosquitto-"+node, node, bin, "-c", conf)
	l.waitTCP(nodeIPs[node]+":1883", p, 10*time.Second)
}

func (l *lab) startAgent(node string) {
	l.t.Helper()
	l.startIn("agent-"+node, node, l.moha, "agent", "--cluster", l.file, "--node", node, "--log-level", "debug")
}

func (l *lab) startHAProxy(lb string) {
	l.t.Helper()
	bin, _ := launch.FindBinary("haproxy")
	p := l.startIn("haproxy-"+lb, lb, bin, "-db", "-f", filepath.Join(l.dir, lb, "haproxy.cfg"))
	l.waitTCP(map[string]string{"lb1": lb1IP, "lb2": lb2IP}[lb]+":1883", p, 10*time.Second)
}

func (l *lab) startKeepalived(lb string) {
	l.t.Helper()
	bin, _ := launch.FindBinary("keepalived")
	d := filepath.Join(l.dir, lb)
	l.startIn("keepalived-"+lb, lb, bin, "-n", "-l", "-D", "-f", filepath.Join(d, "keepalived.conf"),
		"--pid="+filepath.Join(d, "keepalived.pid"), "--vrrp_pid="+filepath.Join(d, "vrrp.pid"),
		"--checkers_pid="+filepath.Join(d, "checkers.pid"))
}

// waitTCP waits until addr (inside the lab) accepts a connection.
func (l *lab) waitTCP(addr string, p *launch.Process, timeout time.Duration) {
	l.t.Helper()
	waitFor(l.t, timeout, "tcp "+addr, func() bool {
		if p != nil {
			if done, err := p.Exited(); done {
				l.t.Fatalf("%s exited (%v); see %s", p.Name, err, p.LogPath)
			}
		}
		c, err := l.dial(addr, 300*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if _, ok := pollUntil(timeout, cond); !ok {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// pollUntil polls cond every 50 ms until it holds (returning how long that took) or
// timeout passes.
func pollUntil(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ipn runs `ip -n <ns> args...` and returns its output.
func (l *lab) ipn(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", l.ns(ns)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %w: %s", l.ns(ns), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (l *lab) mustIP(ns string, args ...string) {
	l.t.Helper()
	if _, err := l.ipn(ns, args...); err != nil {
		l.t.Fatal(err)
	}
}

// hasVIP reports whether lb's eth0 holds the floating IP.
func (l *lab) hasVIP(lb string) bool {
	out, err := l.ipn(lb, "-br", "addr", "show", "eth0")
	return err == nil && strings.Contains(out, floatingIP+"/")
}

func (l *lab) waitVIPOn(lb string, timeout time.Duration) {
	l.t.Helper()
	other := map[string]string{"lb1": "lb2", "lb2": "lb1"}[lb]
	waitFor(l.t, timeout, "floating IP on "+lb+" only", func() bool { return l.hasVIP(lb) && !l.hasVIP(other) })
}

// context returns a context bounded by timeout, cancelled when the test ends.
func (l *lab) context(timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	l.t.Cleanup(cancel)
	return ctx
}

// report is the machine readable summary of a run: every measured figure by drill.
type report struct {
	mu      sync.Mutex
	Started time.Time                 `json:"started"`
	Drills  map[string]map[string]any `json:"drills"`
}

func newReport() *report {
	return &report{Started: time.Now().UTC(), Drills: map[string]map[string]any{}}
}

func (r *report) set(drill, key string, value any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Drills[drill] == nil {
		r.Drills[drill] = map[string]any{}
	}
	if d, ok := value.(time.Duration); ok {
		value = d.Round(time.Millisecond).Seconds()
	}
	r.Drills[drill][key] = value
}

// figure records a figure in the report and the test log.
func (l *lab) figure(t *testing.T, key string, value any) {
	t.Helper()
	drill := strings.TrimPrefix(t.Name(), "TestLab/")
	if i := strings.IndexByte(drill, '/'); i >= 0 {
		key = drill[i+1:] + "." + key
		drill = drill[:i]
	}
	if d, ok := value.(time.Duration); ok {
		t.Logf("FIGURE %s %s = %v", drill, key, d.Round(time.Millisecond))
	} else {
		t.Logf("FIGURE %s %s = %v", drill, key, value)
	}
	l.report.set(drill, key, value)
}

// writeReport writes the figures as JSON to $MOHA_LAB_REPORT, if set.
func (l *lab) writeReport() {
	path := os.Getenv("MOHA_LAB_REPORT")
	if path == "" {
		return
	}
	l.report.mu.Lock()
	data, err := json.MarshalIndent(l.report, "", "  ")
	l.report.mu.Unlock()
	if err != nil {
		l.t.Errorf("report: %v", err)
		return
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		l.t.Errorf("report: %v", err)
	}
}
