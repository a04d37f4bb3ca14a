// Command null-receiver is the load test's baseline: an HTTP server that
// reads each request body and answers 202, doing nothing else.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("listen-address", "127.0.0.1:9999", "Address to listen on.")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})))
}
