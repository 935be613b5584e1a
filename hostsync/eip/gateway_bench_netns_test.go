package eip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

const (
	// flowPort is the UDP echo port on the VIP.
	flowPort = 7200
	// flowSources is how many client addresses (198.51.100.2 and up)
	// new flows come from, each with source ports 1024–65535: with them
	// no flow reuses a conntrack tuple within a run.
	flowSources = 8
)

// BenchmarkGatewayNewFlows measures new UDP flows per second through a
// gateway namespace programmed by the Maps backend with 1 and with
// 10,000 mappings, every EIP limited to 1 Gbit/s (far above what the
// flows send), so each flow's packets run the NAT map lookups and the
// limit lookups. A flow is one request from a new source address and port
// to the EIP, so conntrack sees a new connection and the DNAT rule looks
// the EIP up, and the echo back through the reverse NAT; the client sends
// the next only after the answer. The ratio flows/s at 10,000 over at 1
// shows whether the per-packet cost grows with the number of mappings.
//
// Beyond 254 mappings the idle ones come from RFC 2544's benchmarking
// range (manyMappings), in this benchmark's own namespaces; traffic goes
// only to the first, 203.0.113.5 → 192.0.2.10.
func BenchmarkGatewayNewFlows(b *testing.B) {
	testutil.RequireRoot(b)
	rates := map[int]float64{}
	for _, size := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("mappings=%d", size), func(b *testing.B) {
			rates[size] = benchNewFlows(b, size)
		})
	}
	if rates[1] > 0 && rates[10_000] > 0 {
		b.Logf("new flows/s: %.0f at 1 mapping, %.0f at 10,000; ratio %.3f", rates[1], rates[10_000], rates[10_000]/rates[1])
	}
}

func benchNewFlows(b *testing.B, size int) float64 {
	client, gw, srv := gatewayLab(b)
	for i := 3; i < 2+flowSources; i++ {
		testutil.IP(b, "-n", client, "addr", "add", fmt.Sprintf("198.51.100.%d/24", i), "dev", "c0")
	}
	m := newNetnsMaps(b, gw, false)
	ms := manyMappings(size)
	ms[0].EIP, ms[0].VIP = addr("203.0.113.5"), addr("192.0.2.10")
	for i := range ms {
		ms[i].Bandwidth = 1000
	}
	if err := m.Apply(b.Context(), ms); err != nil {
		b.Fatal(err)
	}
	if st, err := m.Programmed(b.Context()); err != nil || st.Mappings != size {
		b.Fatalf("Programmed = %+v, %v; want %d mappings", st, err, size)
	}
	if l, err := m.Limits(); err != nil || len(l) != size {
		b.Fatalf("%d limits, %v; want %d", len(l), err, size)
	}

	var pc net.PacketConn
	if err := netns.Run(srv, func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(ms[0].VIP, flowPort).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	b.Cleanup(func() { pc.Close(); <-done })

	eip := unix.SockaddrInet4{Port: flowPort, Addr: ms[0].EIP.As4()}
	var flows int
	err := netns.Run(client, func() error {
		for b.Loop() {
			if flows == flowSources*(65536-1024) {
				return errors.New("out of new source ports: lower -benchtime")
			}
			src := unix.SockaddrInet4{Port: 1024 + flows%(65536-1024), Addr: [4]byte{198, 51, 100, byte(2 + flows/(65536-1024))}}
			flows++
			if err := flow(&src, &eip); err != nil {
				return fmt.Errorf("flow %d from %d.%d.%d.%d:%d: %w", flows, src.Addr[0], src.Addr[1], src.Addr[2], src.Addr[3], src.Port, err)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	rate := float64(flows) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "flows/s")
	return rate
}

// flow sends one datagram from src to dst on a new socket and waits for
// its echo (at most two seconds).
func flow(src, dst *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Connect(fd, dst); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	msg := []byte("new flow")
	if _, err := unix.Write(fd, msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	if string(buf[:n]) != string(msg) {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}
