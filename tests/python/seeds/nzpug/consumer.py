# Seed program: the consumer from the nzpug talk's slide "Code example: Consumer"
# (shared/seeds/000_6375023414efc45d.txt). The slide's style (`with conn.channel() as chan`,
# exchange_declare(type=...), basic_consume(callback=...), chan.wait()) is py-amqp's, the AMQP
# library under kombu, so it runs with py-amqp 5.
# The slide is printed as pseudo-code and cannot run as shown. Changed versus the document:
#   1. spaces inside identifiers became underscores (on msg recv -> on_msg_recv, exchange declare
#      -> exchange_declare, queue declare, queue bind, basic consume, routing key, EXCHANGE TYPE,
#      ROUTING KEY);
#   2. the lines after `with conn.channel() as chan:` are indented into the with-block (the slide
#      lost the indentation);
#   3. print msg -> print(msg.body) (Python 3 print; a py-amqp Message has no printable form, its
#      text is .body);
#   4. the slide never defines conn, EXCHANGE, EXCHANGE_TYPE, QUEUE, ROUTING_KEY: the lines above
#      the marked slide text define them (names from env, so each test uses its own; the broker
#      from WARREN_HOST / WARREN_PORT, defaults localhost:5672);
#   5. chan.wait() -> conn.drain_events(): py-amqp 5's Channel.wait needs the method to wait for;
#      Connection.drain_events() is its "wait for whatever comes next".
import os

import amqp

EXCHANGE = os.environ.get('EXCHANGE', 'nzpug')
EXCHANGE_TYPE = os.environ.get('EXCHANGE_TYPE', 'direct')
QUEUE = os.environ.get('QUEUE', 'nzpug')
ROUTING_KEY = os.environ.get('ROUTING_KEY', 'nzpug')

conn = amqp.Connection('%s:%s' % (os.environ.get('WARREN_HOST', 'localhost'),
                                  os.environ.get('WARREN_PORT', '5672')))
conn.connect()

# --- the slide ---
with conn.channel() as chan:
    def on_msg_recv(msg):
        print(msg.body)
    chan.exchange_declare(exchange = EXCHANGE,
                           type = EXCHANGE_TYPE)
    queue = chan.queue_declare(QUEUE)
    chan.queue_bind(exchange = EXCHANGE,
                    queue = QUEUE,
                     routing_key = ROUTING_KEY)
    chan.basic_consume(queue = QUEUE,
                        callback = on_msg_recv)
    while True:
        conn.drain_events()
