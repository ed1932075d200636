package render

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/testkit"
)

// checkGolden compares got with testdata/<name>.golden, rewriting it under -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if the change is intended):\n%s", path, got)
	}
}

func TestKeepalivedGolden(t *testing.T) {
	c := loadCluster(t)
	for _, tc := range []struct {
		name, lb string
		opt      KeepalivedOptions
	}{
		{"keepalived_lb1", "lb1", KeepalivedOptions{}},
		{"keepalived_lb2", "lb2", KeepalivedOptions{}},
		{"keepalived_lb2_unicast_piddir", "lb2", KeepalivedOptions{Unicast: true, PidDir: "/run/moha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Keepalived(c, tc.lb, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tc.name, got)
		})
	}
}

func TestKeepalivedDirectives(t *testing.T) {
	c := loadCluster(t)
	lb1, err := Keepalived(c, "lb1", KeepalivedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lb2, err := Keepalived(c, "lb2", KeepalivedOptions{Unicast: true, PidDir: "/run/moha"})
	if err != nil {
		t.Fatal(err)
	}
	common := []string{
		"    enable_script_security\n", "    script_user root\n", "    vrrp_version 3\n",
		`    script "/usr/bin/timeout 1 /bin/bash -c '</dev/tcp/127.0.0.1/1883'"` + "\n",
		"    interval 1\n", "    fall 2\n", "    rise 1\n",
		"vrrp_instance moha_factory {\n", "    state BACKUP\n", "    interface eth0\n",
		"    virtual_router_id 51\n", "    advert_int 0.5\n", "    garp_master_delay 1\n",
		"    garp_master_refresh 2\n", "        10.0.0.100/24 dev eth0\n",
		"    track_script {\n        moha_factory_haproxy\n    }\n",
	}
	for _, tc := range []struct {
		name, conf    string
		want, wantNot []string
	}{
		{"lb1", lb1, []string{"    router_id lb1\n", "    priority 150\n"}, []string{"unicast", "\ninstance ", "pgrep", "nopreempt"}},
		{"lb2", lb2, []string{
			"    router_id lb2\n", "    priority 100\n", "\ninstance lb2\n",
			"--pid=/run/moha/keepalived-lb2.pid --vrrp_pid=/run/moha/vrrp-lb2.pid --checkers_pid=/run/moha/checkers-lb2.pid",
			"    unicast_src_ip 10.0.0.3\n    unicast_peer {\n        10.0.0.2\n    }\n",
		}, []string{"nopreempt", "10.0.0.3\n}"}},
	} {
		for _, w := range append(tc.want, common...) {
			if !strings.Contains(tc.conf, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, tc.conf)
			}
		}
		var lines []string
		for _, d := range directives(tc.conf) {
			lines = append(lines, strings.Join(d, " "))
		}
		for _, w := range tc.wantNot {
			if strings.Contains("\n"+strings.Join(lines, "\n"), w) {
				t.Errorf("%s: a directive contains %q", tc.name, w)
			}
		}
	}
}

func TestKeepalivedErrors(t *testing.T) {
	c := loadCluster(t)
	if _, err := Keepalived(c, "lb9", KeepalivedOptions{}); !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), "lb1, lb2") {
		t.Errorf("unknown lb: %v, want ErrOption listing lb1, lb2", err)
	}
	for _, dir := range []string{"relative", "/run/a b", "/run/x\ninstance y"} {
		if _, err := Keepalived(c, "lb1", KeepalivedOptions{PidDir: dir}); !errors.Is(err, ErrOption) {
			t.Errorf("pid dir %q: %v, want ErrOption", dir, err)
		}
	}
	if _, err := Keepalived(nil, "lb1", KeepalivedOptions{}); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("nil cluster: %v, want ErrInvalid", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*config.LoadBalancers)
		opt    KeepalivedOptions
		want   error
	}{
		{"no floating ip", func(lb *config.LoadBalancers) { lb.FloatingIP = "" }, KeepalivedOptions{}, ErrOption},
		{"no hosts", func(lb *config.LoadBalancers) { lb.Hosts = nil }, KeepalivedOptions{}, ErrOption},
		{"bad interface", func(lb *config.LoadBalancers) { lb.Interface = "eth0\n}" }, KeepalivedOptions{}, config.ErrInvalid},
		{"unicast to a name", func(lb *config.LoadBalancers) { lb.Hosts[1].Address = "lb2.example.com" },
			KeepalivedOptions{Unicast: true}, ErrOption},
		{"unicast across families", func(lb *config.LoadBalancers) { lb.Hosts[1].Address = "fd00::3" },
			KeepalivedOptions{Unicast: true}, ErrOption},
		{"unicast alone", func(lb *config.LoadBalancers) { lb.Hosts = lb.Hosts[:1] }, KeepalivedOptions{Unicast: true}, ErrOption},
	} {
		bad := loadCluster(t)
		tc.change(&bad.LoadBalancers)
		if _, err := Keepalived(bad, "lb1", tc.opt); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Multicast does not care whether the other hosts have names.
	named := loadCluster(t)
	named.LoadBalancers.Hosts[1].Address = "lb2.example.com"
	if _, err := Keepalived(named, "lb1", KeepalivedOptions{}); err != nil {
		t.Errorf("multicast with a named peer: %v", err)
	}
}

func TestKeepalivedIPv6(t *testing.T) {
	c := loadCluster(t)
	c.LoadBalancers.FloatingIP = "fd00::100/64"
	c.LoadBalancers.Hosts[0].Address = "fd00::2"
	c.LoadBalancers.Hosts[1].Address = "::ffff:10.0.0.3" // an IPv4 address, written as IPv6
	if _, err := Keepalived(c, "lb1", KeepalivedOptions{Unicast: true}); !errors.Is(err, ErrOption) {
		t.Errorf("IPv6 floating IP with an IPv4 peer: %v, want ErrOption", err)
	}
	c.LoadBalancers.Hosts[1].Address = "fd00::3"
	conf, err := Keepalived(c, "lb1", KeepalivedOptions{Unicast: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"        fd00::100/64 dev eth0\n", "    unicast_src_ip fd00::2\n", "        fd00::3\n"} {
		if !strings.Contains(conf, w) {
			t.Errorf("output lacks %q:\n%s", w, conf)
		}
	}
}

// The tests below hand the rendered keepalived.conf to the real keepalived, inside a
// network namespace made for the test that has the VRRP interface.

// netns is a network namespace that exists for one test.
type netns struct {
	name string
	ip   string // the ip binary
}

// newNetns creates a namespace with loopback and iface up, deleted when the test ends.
// It skips, saying why, where namespaces cannot be made.
func newNetns(t *testing.T, iface string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.SkipUnavailable(t, "creating a network namespace needs root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		testkit.SkipUnavailable(t, "ip (iproute2) is not installed, so no network namespace")
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	ns := &netns{name: fmt.Sprintf("moha-kt-%x", suffix), ip: ip}
	if out, err := runCommand(ip, "netns", "add", ns.name); err != nil {
		testkit.SkipUnavailable(t, "ip netns add is unavailable here: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := runCommand(ip, "netns", "delete", ns.name); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", ns.name, err, out)
		}
	})
	// A dummy interface is the natural stand-in; where the kernel lacks the dummy module,
	// a veth pair with both ends in the namespace does as well.
	if _, err := runCommand(ip, "-n", ns.name, "link", "add", iface, "type", "dummy"); err != nil {
		ns.must(t, "link", "add", iface, "type", "veth", "peer", "name", iface+"p")
		ns.must(t, "link", "set", iface+"p", "up")
	}
	ns.must(t, "link", "set", iface, "up")
	ns.must(t, "link", "set", "lo", "up")
	return ns
}

// must runs `ip -n <ns> args...`.
func (ns *netns) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCommand(ns.ip, append([]string{"-n", ns.name}, args...)...)
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", ns.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exec runs a command inside the namespace and waits for it.
func (ns *netns) exec(name string, args ...string) ([]byte, error) {
	return runCommand(ns.ip, append([]string{"netns", "exec", ns.name, name}, args...)...)
}

// runCommand runs a short command with a deadline and returns its combined output.
func runCommand(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func writeTemp(t *testing.T, name, contents string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestKeepalivedAcceptsConfig(t *testing.T) {
	keepalived := findBinary(t, "keepalived")
	c := loadCluster(t)
	ns := newNetns(t, c.LoadBalancers.Interface)
	v6 := loadCluster(t)
	v6.LoadBalancers.FloatingIP = "fd00::100/64"
	v6.LoadBalancers.Hosts[0].Address, v6.LoadBalancers.Hosts[1].Address = "fd00::2", "fd00::3"
	for _, tc := range []struct {
		name string
		c    *config.Cluster
		lb   string
		opt  KeepalivedOptions
	}{
		{"lb1", c, "lb1", KeepalivedOptions{}},
		{"lb2", c, "lb2", KeepalivedOptions{}},
		{"lb2 unicast pid dir", c, "lb2", KeepalivedOptions{Unicast: true, PidDir: t.TempDir()}},
		{"ipv6 unicast", v6, "lb1", KeepalivedOptions{Unicast: true}},
	} {
		conf, err := Keepalived(tc.c, tc.lb, tc.opt)
		if err != nil {
			t.Fatal(err)
		}
		file := writeTemp(t, "keepalived.conf", conf)
		out, err := ns.exec(keepalived, "-t", "-f", file)
		if err != nil {
			t.Errorf("%s: keepalived -t rejected the config: %v\n%s\n%s", tc.name, err, out, conf)
		} else if len(out) > 0 {
			t.Errorf("%s: keepalived -t complains about the config:\n%s", tc.name, out)
		}
	}
}

// TestKeepalivedRejectsMissingInterface shows the check above can fail: keepalived -t
// exits 5 on a config whose VRRP interface does not exist.
func TestKeepalivedRejectsMissingInterface(t *testing.T) {
	keepalived := findBinary(t, "keepalived")
	c := loadCluster(t)
	ns := newNetns(t, c.LoadBalancers.Interface)
	c.LoadBalancers.Interface = "moha-none0"
	conf, err := Keepalived(c, "lb1", KeepalivedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ns.exec(keepalived, "-t", "-f", writeTemp(t, "keepalived.conf", conf))
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 5 {
		t.Fatalf("keepalived -t on a missing interface: %v, want exit status 5\n%s", err, out)
	}
}

// nsProcess is a daemon running in the foreground inside a namespace.
type nsProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	output *syncBuffer
}

// start runs a daemon inside the namespace until the test ends (or kill).
func (ns *netns) start(t *testing.T, name string, args ...string) *nsProcess {
	t.Helper()
	p := &nsProcess{output: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(ns.ip, append([]string{"netns", "exec", ns.name, name}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	// Its own process group, so that killing it reaches keepalived's children too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop(t, syscall.SIGTERM) })
	return p
}

// stop sends sig to the process group and waits for the process, killing the group if
// it outlives 5 s. SIGTERM lets keepalived stop its children before it exits.
func (p *nsProcess) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.exited:
		return
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Errorf("%s did not exit after SIGKILL", p.cmd.Args)
	}
}

// pollUntil reports whether cond held within timeout.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// TestKeepalivedFollowsHAProxy runs the rendered keepalived beside the rendered HAProxy in
// a namespace: it takes the floating IP while HAProxy listens, releases it once HAProxy
// is killed, and takes it back when HAProxy returns.
func TestKeepalivedFollowsHAProxy(t *testing.T) {
	keepalived := findBinary(t, "keepalived")
	haproxy := findBinary(t, "haproxy")
	c := loadCluster(t)
	lbs := &c.LoadBalancers
	ns := newNetns(t, lbs.Interface)
	// Documentation addresses (RFC 5737), only ever inside the namespace.
	lbs.FloatingIP = "192.0.2.100/24"
	lbs.Hosts[0].Address, lbs.Hosts[1].Address = "192.0.2.2", "192.0.2.3"
	lbs.Port = testkit.FreePort(t)
	lbs.MaxConn = 100 // HAProxy wants twice as many open files: stay below any limit
	ns.must(t, "addr", "add", "192.0.2.2/24", "dev", lbs.Interface)

	haConf, err := HAProxy(c, HAProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	haFile := writeTemp(t, "haproxy.cfg", haConf)
	pidDir := t.TempDir()
	kaConf, err := Keepalived(c, "lb1", KeepalivedOptions{PidDir: pidDir})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-n", "-l", "-D", "-f", writeTemp(t, "keepalived.conf", kaConf)}, KeepalivedPidArgs(pidDir, "lb1")...)
	ka := ns.start(t, keepalived, args...)

	hasVIP := func() bool {
		return strings.Contains(ns.must(t, "-o", "addr", "show", "dev", lbs.Interface), " 192.0.2.100/24 ")
	}
	var ha *nsProcess
	expect := func(what string, want bool) {
		t.Helper()
		if !pollUntil(10*time.Second, func() bool { return hasVIP() == want }) {
			t.Fatalf("%s: floating IP held = %v after 10 s, want %v\nkeepalived:\n%s\nhaproxy:\n%s",
				what, !want, want, ka.output, ha.output)
		}
	}

	ha = ns.start(t, haproxy, "-db", "-f", haFile)
	expect("with HAProxy listening", true)
	if _, err := os.Stat(filepath.Join(pidDir, "vrrp-lb1.pid")); err != nil {
		t.Errorf("no VRRP pid file in the pid dir: %v", err)
	}
	start := time.Now()
	ha.stop(t, syscall.SIGKILL)
	expect("after HAProxy was killed", false)
	t.Logf("floating IP released %v after HAProxy was killed", time.Since(start).Round(10*time.Millisecond))
	ha = ns.start(t, haproxy, "-db", "-f", haFile)
	expect("after HAProxy came back", true)
}
