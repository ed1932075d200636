package render

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/moha-project/moha/internal/config"
)

// KeepalivedOptions adjusts the rendered keepalived.conf.
type KeepalivedOptions struct {
	// PidDir, when set, is where this keepalived's pid files go: several keepalived on
	// one host (one per network namespace, in tests and demos) must not share them, or
	// the second exits with "daemon is already running". keepalived has no config keyword
	// for a pid directory, so the file gets `instance <lb>` (pid files named after the
	// load balancer even when started without flags) and a comment with the command line
	// that puts them in PidDir (KeepalivedPidArgs).
	PidDir string
	// Unicast sends VRRP adverts from this host's address to the other load balancer
	// hosts' addresses instead of multicast (for networks that drop multicast, such as
	// most clouds). Every host address must then be an IP of the floating IP's family.
	Unicast bool
}

// Keepalived renders keepalived.conf (keepalived 2.2) for load balancer host lb, one of
// the cluster's load_balancers.hosts: a VRRPv3 instance holding the floating IP on the
// healthiest host with the highest priority, where "healthy" means this host's HAProxy
// accepts TCP connections on the client port.
func Keepalived(c *config.Cluster, lb string, opt KeepalivedOptions) (string, error) {
	if err := validCluster(c); err != nil {
		return "", err
	}
	lbs := &c.LoadBalancers
	host, err := lbHost(lbs, lb)
	if err != nil {
		return "", err
	}
	vip, err := floatingIP(lbs.FloatingIP)
	if err != nil {
		return "", err
	}
	if err := checkPidDir(opt.PidDir); err != nil {
		return "", err
	}
	var src string
	var peers []string
	if opt.Unicast {
		if src, peers, err = unicastAddrs(lbs, host, vip); err != nil {
			return "", err
		}
	}

	var w writer
	w.header(fmt.Sprintf("cluster %q, load balancer %q (moha render keepalived)", c.Name, host.Name))
	if opt.PidDir != "" {
		writeInstance(&w, host.Name, opt.PidDir)
	}
	writeGlobalDefs(&w, host.Name)
	script := "moha_" + c.Name + "_haproxy"
	writeCheckScript(&w, script, lbs.Port)
	writeVRRPInstance(&w, vrrpInstance{
		name:      "moha_" + c.Name,
		iface:     lbs.Interface,
		routerID:  lbs.RouterID,
		priority:  host.Priority,
		vip:       vip,
		script:    script,
		unicastIP: src,
		peers:     peers,
	})
	return w.String(), nil
}

// KeepalivedPidArgs gives the keepalived command-line flags that put the pid files of the
// keepalived for load balancer lb in pidDir.
func KeepalivedPidArgs(pidDir, lb string) []string {
	return []string{
		"--pid=" + filepath.Join(pidDir, "keepalived-"+lb+".pid"),
		"--vrrp_pid=" + filepath.Join(pidDir, "vrrp-"+lb+".pid"),
		"--checkers_pid=" + filepath.Join(pidDir, "checkers-"+lb+".pid"),
	}
}

// lbHost finds the load balancer host called name; the error lists the known ones.
func lbHost(lbs *config.LoadBalancers, name string) (*config.LBHost, error) {
	names := make([]string, 0, len(lbs.Hosts))
	for i := range lbs.Hosts {
		if lbs.Hosts[i].Name == name {
			return &lbs.Hosts[i], nil
		}
		names = append(names, lbs.Hosts[i].Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: load balancer %q: load_balancers.hosts is empty", ErrOption, name)
	}
	return nil, fmt.Errorf("%w: load balancer %q is not in load_balancers.hosts (known: %s)",
		ErrOption, name, strings.Join(names, ", "))
}

// floatingIP parses the validated floating_ip, which keepalived cannot do without.
func floatingIP(cidr string) (netip.Prefix, error) {
	if cidr == "" {
		return netip.Prefix{}, fmt.Errorf("%w: load_balancers.floating_ip is not set: keepalived needs it", ErrOption)
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("render: load_balancers.floating_ip: %w", err)
	}
	return p, nil
}

func checkPidDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := checkOptionText("pid dir", dir); err != nil {
		return err
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%w: pid dir %q is not an absolute path", ErrOption, dir)
	}
	return nil
}

// unicastAddrs gives this host's address (the adverts' source) and the other hosts'
// addresses. keepalived takes IP addresses only, of the same family as the floating IP.
func unicastAddrs(lbs *config.LoadBalancers, self *config.LBHost, vip netip.Prefix) (string, []string, error) {
	var src string
	var peers []string
	for _, h := range lbs.Hosts {
		ip, err := netip.ParseAddr(h.Address)
		if err != nil || ip.Zone() != "" {
			return "", nil, fmt.Errorf("%w: unicast: load balancer %s address %q is not an IP address", ErrOption, h.Name, h.Address)
		}
		ip = ip.Unmap()
		if ip.Is4() != vip.Addr().Unmap().Is4() {
			return "", nil, fmt.Errorf("%w: unicast: load balancer %s address %s is not of the floating IP's family (%s)",
				ErrOption, h.Name, ip, vip)
		}
		if h.Name == self.Name {
			src = ip.String()
			continue
		}
		peers = append(peers, ip.String())
	}
	if len(peers) == 0 {
		return "", nil, fmt.Errorf("%w: unicast needs at least one other load balancer host", ErrOption)
	}
	return src, peers, nil
}

func writeInstance(w *writer, lb, pidDir string) {
	w.comment(
		"Pid files named after this load balancer, so several keepalived can run on one host",
		"(one per network namespace). keepalived has no keyword for their directory; start it as",
		"  keepalived -f <this file> "+strings.Join(KeepalivedPidArgs(pidDir, lb), " "),
	)
	w.line("instance %s", lb)
	w.blank()
}

func writeGlobalDefs(w *writer, lb string) {
	w.line("global_defs {")
	w.line("    router_id %s", lb)
	w.sectionComment(
		"Run the check script as root, and only if no other user can change it or its",
		"directories (keepalived checks).",
	)
	w.line("    enable_script_security")
	w.line("    script_user root")
	w.sectionComment(
		"VRRPv3 allows sub-second adverts (advert_int below). In keepalived 2.2 this is a",
		"global keyword: inside vrrp_instance it is rejected. VRRPv3 has no authentication:",
		"keep VRRP on a network only the load balancers and routers share.",
	)
	w.line("    vrrp_version 3")
	w.line("}")
	w.blank()
}

// writeCheckScript writes the health check the VRRP instance tracks.
func writeCheckScript(w *writer, name string, port int) {
	w.comment(
		"This host is fit to hold the floating IP while its HAProxy accepts TCP connections on",
		"the client port. A connect rather than `pgrep haproxy`: a process can exist without",
		"listening, and hosts sharing a PID space (network namespaces) see each other's processes.",
		"It connects to 127.0.0.1, so HAProxy must listen on every address (`bind *:port`, what",
		"`moha render haproxy` writes). That is also what lets the standby's HAProxy run before",
		"the floating IP arrives (binding that IP would need net.ipv4.ip_nonlocal_bind=1).",
		"interval is whole seconds: a dead (or hung: timeout 1) HAProxy costs the IP within",
		"fall x interval = 2 s.",
	)
	w.line("vrrp_script %s {", name)
	w.line(`    script "/usr/bin/timeout 1 /bin/bash -c '</dev/tcp/127.0.0.1/%d'"`, port)
	w.line("    interval 1")
	w.line("    fall 2")
	w.line("    rise 1")
	w.line("}")
	w.blank()
}

type vrrpInstance struct {
	name, iface        string
	routerID, priority int
	vip                netip.Prefix
	script             string
	unicastIP          string   // empty: multicast
	peers              []string // with unicastIP
}

func writeVRRPInstance(w *writer, v vrrpInstance) {
	w.comment(
		"Every host starts as BACKUP: after advert_int x 3 without hearing a higher priority it",
		"becomes MASTER, so the highest-priority healthy host holds the floating IP. Starting",
		"as MASTER would make a restarted host claim the IP at once, before it knows the others.",
		"nopreempt is not set: a higher-priority host that recovers takes the IP back, which",
		"moves (and so drops) the client connections once more; in exchange the preferred host",
		"is always the one serving.",
	)
	w.line("vrrp_instance %s {", v.name)
	w.line("    state BACKUP")
	w.line("    interface %s", v.iface)
	w.line("    virtual_router_id %d", v.routerID)
	w.line("    priority %d", v.priority)
	w.line("    advert_int 0.5")
	writeGARP(w)
	w.line("    virtual_ipaddress {")
	w.line("        %s dev %s", v.vip, v.iface)
	w.line("    }")
	if v.unicastIP != "" {
		w.sectionComment("Adverts go to the other load balancers directly, not to the VRRP multicast group.")
		w.line("    unicast_src_ip %s", v.unicastIP)
		w.line("    unicast_peer {")
		for _, p := range v.peers {
			w.line("        %s", p)
		}
		w.line("    }")
	}
	w.sectionComment("Two failed checks in a row put this host in FAULT: it releases the IP.")
	w.line("    track_script {")
	w.line("        %s", v.script)
	w.line("    }")
	w.line("}")
}

// writeGARP writes the gratuitous ARP settings (why: in the comment it writes).
func writeGARP(w *writer) {
	w.sectionComment(
		"Gratuitous ARP: a master whose keepalived was killed (SIGKILL, OOM) keeps the floating",
		"IP on its interface and still answers ARP for it, so the new master announces itself",
		"at once, again 1 s later, and then every 2 s while it is master: a neighbour that",
		"re-learned the IP from the old host is corrected within 2 s.",
	)
	w.line("    garp_master_delay 1")
	w.line("    garp_master_refresh 2")
}
