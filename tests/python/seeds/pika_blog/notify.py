# Seed program "notify.py" from the pika blog (shared/seeds/002_3d1d4cfac00116e8.txt), run with
# the pika 0.13 venv (py-venv-pika013).
# Changed versus the document, and nothing else:
#   1. added `import os`;
#   2. pika.ConnectionParameters('localhost') -> pika.ConnectionParameters(
#          os.environ.get('WARREN_HOST', 'localhost'), int(os.environ.get('WARREN_PORT', '5672')))
#      so the tests can point it at a broker on another host/port; with neither variable set it
#      connects exactly as the original (localhost:5672).
# notify.py
import pika
import json
import os


connection = pika.BlockingConnection(pika.ConnectionParameters(
    os.environ.get('WARREN_HOST', 'localhost'), int(os.environ.get('WARREN_PORT', '5672'))))
channel = connection.channel()

queue = channel.queue_declare('order_notify')
queue_name = queue.method.queue

channel.queue_bind(
    exchange='order',
    queue=queue_name,
    routing_key='order.notify'  # binding key
)


def callback(ch, method, properties, body):
    payload = json.loads(body)
    print(' [x] Notifying {}'.format(payload['user_email']))
    print(' [x] Done')
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_consume(callback, queue=queue_name)

print(' [*] Waiting for notify messages. To exit press CTRL+C')

channel.start_consuming()
