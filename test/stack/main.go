package stack

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main runs f on s for a command such as make demo: it stops every process of the stack when f
// returns or panics, and on Ctrl-C or SIGTERM, and exits 1 after a panic, naming what failed.
func Main(s *Stack, what string, f func(*Stack)) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\ninterrupted: stopping")
		s.Stop()
		os.Exit(130)
	}()
	code := 0
	func() {
		defer s.Stop()
		defer func() {
			if r := recover(); r != nil {
				fmt.Fprintf(os.Stderr, "%s failed: %v\n", what, r)
				code = 1
			}
		}()
		f(s)
	}()
	os.Exit(code)
}
