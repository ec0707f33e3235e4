# Seed program "number_producer.py" from the summer-camp kombu notebook
# (shared/seeds/001_f877ee2fcb13b304.txt, Exercise 1), run with kombu 5.3.
# Changed versus the document, and nothing else:
#   1. xrange(1000) -> range(1000) (xrange does not exist in Python 3);
#   2. added `import os`, and Connection('amqp://guest:guest@localhost//') reads the host and
#      port from WARREN_HOST / WARREN_PORT (defaults: localhost, 5672 -- the original) so the
#      tests can point it at a broker on another host/port.
# Exercise 1 - simple messaging (single producer, single consumer)
# part a - number_producer.py

import os
from kombu import Connection, Exchange, Queue

number_exchange = Exchange('number', 'direct', durable=True)
number_queue = Queue('number', exchange=number_exchange, routing_key='number')

# connection
with Connection('amqp://guest:guest@%s:%s//' % (
        os.environ.get('WARREN_HOST', 'localhost'), os.environ.get('WARREN_PORT', '5672'))) as conn:

    # produce
    producer = conn.Producer(serializer='json')

    for i in range(1000):
        number = i
        producer.publish(
            {'number': number},
            exchange=number_exchange,
            routing_key='number',
            declare=[number_queue]
        )
