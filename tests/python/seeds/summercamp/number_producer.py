# Exercise 1 - simple messaging (single producer, single consumer)
# part a - number_producer.py
# Changed from the notebook for Python 3 only: xrange -> range.

from kombu import Connection, Exchange, Queue

number_exchange = Exchange('number', 'direct', durable=True)
number_queue = Queue('number', exchange=number_exchange, routing_key='number')

# connection
with Connection('amqp://guest:guest@localhost//') as conn:

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
