// A worker that posts every message back: a control for the harness's
// capture of what the page reads from workers.
self.onmessage = (e) => self.postMessage(e.data);
