// The peer for hangar's plugin benchmark: a HashiCorp go-plugin gRPC plugin
// and its host, answering the same 1 KB echo that
// crates/plugin/examples/plugin_bench.rs sends through hangar's transports.
//
// One binary is both sides: started by go-plugin (its magic cookie in the
// environment) it serves the plugin; otherwise it is the host, which starts
// itself as the plugin, dispenses it over gRPC (go-plugin's own Unix socket,
// no TLS) and measures host-to-plugin calls:
//
//	goplugin-bench [SECONDS]
//
// prints one JSON line: {"p50_us", "p99_us", "rps", "go", "calls"}: p50 and
// p99 of 5,000 sequential calls after 500 warm-up calls, and calls per second
// with 64 concurrent callers for SECONDS (default 2).
//
// The service is declared by hand (no protoc): one unary method
// /hangar.bench.Echo/Echo taking and returning google.protobuf.BytesValue,
// whose bytes are the request's 1,003 bytes of JSON, echoed unparsed.
//
// Build (Debian's golang-go, golang-github-hashicorp-go-plugin-dev,
// golang-google-grpc-dev, golang-google-protobuf-dev,
// golang-github-golang-protobuf-1-5-dev, golang-golang-x-net-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o goplugin-bench .
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	callers  = 64
	latCalls = 5000
	warmup   = 500
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "HANGAR_BENCH_GO_PLUGIN",
	MagicCookieValue: "echo",
}

// Echoer is what the host calls.
type Echoer interface {
	Echo(ctx context.Context, b []byte) ([]byte, error)
}

const method = "/hangar.bench.Echo/Echo"

func echoHandler(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(wrapperspb.BytesValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	return in, nil
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "hangar.bench.Echo",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "bench.proto",
}

// EchoPlugin is the go-plugin side of the service.
type EchoPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

// GRPCServer registers the echo service on the plugin's gRPC server.
func (EchoPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, struct{}{})
	return nil
}

// GRPCClient gives the host its Echoer over the plugin's connection.
func (EchoPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &echoClient{c}, nil
}

type echoClient struct{ c *grpc.ClientConn }

func (e *echoClient) Echo(ctx context.Context, b []byte) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := e.c.Invoke(ctx, method, wrapperspb.Bytes(b), out); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// The same document plugin_bench sends: {"id","user","tags","payload"}, 1,003 bytes.
func payload() []byte {
	return []byte(`{"id":42,"payload":"` + strings.Repeat("x", 940) + `","tags":["a","b","c"],"user":"bench-user"}`)
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "goplugin-bench: "+format+"\n", a...)
	os.Exit(1)
}

func call(e Echoer, body []byte) {
	out, err := e.Echo(context.Background(), body)
	if err != nil {
		fail("call: %v", err)
	}
	if len(out) != len(body) {
		fail("echo of %d bytes came back as %d", len(body), len(out))
	}
}

func main() {
	if os.Getenv(handshake.MagicCookieKey) == handshake.MagicCookieValue {
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: handshake,
			Plugins:         plugin.PluginSet{"echo": EchoPlugin{}},
			GRPCServer:      plugin.DefaultGRPCServer,
		})
		return
	}
	secs := 2.0
	if len(os.Args) > 1 {
		s, err := strconv.ParseFloat(os.Args[1], 64)
		if err != nil || s <= 0 {
			fail("SECONDS must be a positive number, not %q", os.Args[1])
		}
		secs = s
	}
	self, err := os.Executable()
	if err != nil {
		fail("cannot find this program: %v", err)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{"echo": EchoPlugin{}},
		Cmd:              exec.Command(self),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		fail("start the plugin: %v", err)
	}
	raw, err := rpc.Dispense("echo")
	if err != nil {
		fail("dispense: %v", err)
	}
	e := raw.(Echoer)
	body := payload()

	for i := 0; i < warmup; i++ {
		call(e, body)
	}
	lat := make([]time.Duration, latCalls)
	for i := range lat {
		t := time.Now()
		call(e, body)
		lat[i] = time.Since(t)
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })

	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				call(e, body)
			}
		}()
	}
	wg.Wait()
	var total int64
	start := time.Now()
	end := start.Add(time.Duration(secs * float64(time.Second)))
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for time.Now().Before(end) {
				call(e, body)
				n++
			}
			atomic.AddInt64(&total, n)
		}()
	}
	wg.Wait()
	rps := float64(total) / time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]interface{}{
		"p50_us": float64(lat[len(lat)/2].Nanoseconds()) / 1e3,
		"p99_us": float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3,
		"rps":    rps,
		"calls":  total,
		"go":     runtime.Version(),
	})
	fmt.Println(string(out))
}
