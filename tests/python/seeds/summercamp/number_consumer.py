# Seed program "number_consumer.py" from the summer-camp kombu notebook
# (shared/seeds/001_f877ee2fcb13b304.txt, Exercise 1), run with kombu 5.3.
# Changed versus the document, and nothing else:
#   1. print n**2 -> print(n**2) (Python 2 print statement);
#   2. added `import os`, and Connection('amqp://guest:guest@localhost//') reads the host and
#      port from WARREN_HOST / WARREN_PORT (defaults: localhost, 5672 -- the original) so the
#      tests can point it at a broker on another host/port.
# Exercise 1
# part b - number_consumer.py
import os
from kombu import Connection, Exchange, Queue

number_exchange = Exchange('number', 'direct', durable=True)
number_queue = Queue('number', exchange=number_exchange, routing_key='number')

def process_number(body, message):
    n = body['number']
    print(n**2)
    message.ack()
    
with Connection('amqp://guest:guest@%s:%s//' % (
        os.environ.get('WARREN_HOST', 'localhost'), os.environ.get('WARREN_PORT', '5672'))) as conn:
    # consume
    with conn.Consumer(number_queue, callbacks=[process_number]) as consumer:
        # Process messages and handle events on all channels
        while True:
            conn.drain_events()
