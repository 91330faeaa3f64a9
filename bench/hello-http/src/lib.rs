//! Answers every request with 202 and a short JSON body, after reading the
//! request body: the same work, at the HTTP edge, as Paddock's ingestion
//! endpoint minus the checks and the durable write.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        // Drain the body, as an ingestion endpoint must.
        if let Ok(body) = request.consume() {
            if let Ok(stream) = body.stream() {
                while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                    if chunk.is_empty() {
                        break;
                    }
                }
            }
        }
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(202);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(out) = body.write() {
            let _ = out.blocking_write_and_flush(br#"{"event_id":"0"}"#);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
