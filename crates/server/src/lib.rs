//! AMQP front end.
