// Open-loop connection load for bench/sidecar.py: agent-check connections and /health requests at fixed
// rates, each timed from connect to a complete answer. Written in Go so the load process adds as little
// tail of its own as it can: one goroutine per connection, no interpreter lock, no collector pauses worth
// the name. Prints the same JSON as the Python load process it replaces when Go is present.
//
//	loadgen -agent 127.0.0.1:9999 -agent-rate 2000 -health 127.0.0.1:9898 -health-rate 200 -seconds 2
//
// With -serve-agent and -serve-http it is instead the machine's floor: the least a server can do for the
// same load (a fixed agent line; a fixed HTTP 200), for comparison in the same run.
//
//	loadgen -serve-agent 127.0.0.1:19999 -serve-http 127.0.0.1:19898
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const connectionTimeout = 5 * time.Second

var healthRequest = []byte("GET /health HTTP/1.0\r\nHost: bench\r\n\r\n")

type streamResult struct {
	LatenciesUs []int64 `json:"latencies_us"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
}

type stream struct {
	kind    string
	address string
	rate    float64
	count   int

	mu        sync.Mutex
	latencies []int64
	errors    int
	lastDone  time.Time
}

func (s *stream) record(latency time.Duration, ok bool, done time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.errors++
		return
	}
	s.latencies = append(s.latencies, latency.Microseconds())
	if done.After(s.lastDone) {
		s.lastDone = done
	}
}

// exchange makes one connection and reports whether a complete, good answer came back.
func (s *stream) exchange() bool {
	conn, err := net.DialTimeout("tcp", s.address, connectionTimeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(connectionTimeout)); err != nil {
		return false
	}
	if s.kind == "health" {
		if _, err := conn.Write(healthRequest); err != nil {
			return false
		}
		answer, err := io.ReadAll(conn) // HTTP/1.0: the sidecar closes after the response
		return err == nil && bytes.HasPrefix(answer, []byte("HTTP/1.1 200"))
	}
	var answer []byte
	buffer := make([]byte, 256)
	for !bytes.Contains(answer, []byte("\n")) {
		n, err := conn.Read(buffer)
		answer = append(answer, buffer[:n]...)
		if err != nil {
			break
		}
	}
	return bytes.HasSuffix(answer, []byte("\n"))
}

func (s *stream) run(begin time.Time, wg *sync.WaitGroup) {
	defer wg.Done()
	var connections sync.WaitGroup
	for launched := 0; launched < s.count; launched++ {
		time.Sleep(time.Until(begin.Add(time.Duration(float64(launched) / s.rate * float64(time.Second)))))
		connections.Add(1)
		go func() {
			defer connections.Done()
			started := time.Now()
			ok := s.exchange()
			done := time.Now()
			s.record(done.Sub(started), ok, done)
		}()
	}
	connections.Wait()
}

var floorHTTPResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: application/health+json\r\n" +
	"Content-Length: 17\r\nConnection: close\r\n\r\n{\"status\":\"pass\"}")

// serve answers every connection on `address` with `answer` (after reading a request head when `readHead`).
func serve(address string, answer []byte, readHead bool) error {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go func(conn net.Conn) {
			defer conn.Close()
			if readHead {
				buffer := make([]byte, 4096)
				var head []byte
				for !bytes.Contains(head, []byte("\r\n\r\n")) {
					n, err := conn.Read(buffer)
					head = append(head, buffer[:n]...)
					if err != nil {
						return
					}
				}
			}
			_, _ = conn.Write(answer)
		}(conn)
	}
}

func main() {
	serveAgent := flag.String("serve-agent", "", "be the floor's agent server on host:port")
	serveHTTP := flag.String("serve-http", "", "be the floor's HTTP server on host:port")
	agent := flag.String("agent", "", "host:port of the agent-check listener")
	agentRate := flag.Float64("agent-rate", 2000, "agent connections per second")
	health := flag.String("health", "", "host:port of the HTTP listener (/health)")
	healthRate := flag.Float64("health-rate", 200, "/health requests per second")
	seconds := flag.Float64("seconds", 2, "length of the load")
	flag.Parse()

	if *serveAgent != "" || *serveHTTP != "" {
		failed := make(chan error, 2)
		if *serveAgent != "" {
			go func() { failed <- serve(*serveAgent, []byte("up 100%\n"), false) }()
		}
		if *serveHTTP != "" {
			go func() { failed <- serve(*serveHTTP, floorHTTPResponse, true) }()
		}
		if err := <-failed; err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
		}
		os.Exit(1)
	}

	var streams []*stream
	if *agent != "" {
		streams = append(streams, &stream{kind: "agent", address: *agent, rate: *agentRate})
	}
	if *health != "" {
		streams = append(streams, &stream{kind: "health", address: *health, rate: *healthRate})
	}
	begin := time.Now().Add(50 * time.Millisecond)
	var wg sync.WaitGroup
	for _, s := range streams {
		s.count = int(s.rate * *seconds)
		s.lastDone = begin
		s.latencies = []int64{} // JSON [] rather than null when nothing succeeds
		wg.Add(1)
		go s.run(begin, &wg)
	}
	wg.Wait()

	results := map[string]streamResult{}
	for _, s := range streams {
		elapsed := s.lastDone.Sub(begin).Seconds()
		if elapsed <= 0 {
			elapsed = 1e-9
		}
		results[s.kind] = streamResult{LatenciesUs: s.latencies, Errors: s.errors, Seconds: elapsed}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(1)
	}
}
